"""benchmarks/gpu_check.sh where TensorFlow sees no GPU: one line, exit 0, no file changed."""

import os
import subprocess
import sys

from conftest import REPO
from conftest import tree_snapshot


def benchmark_files():
  return tree_snapshot(os.path.join(REPO, "benchmarks", "results")), os.stat(
      os.path.join(REPO, "BENCHMARKS.md")).st_mtime_ns


def test_gpu_check_without_a_gpu_says_so_and_changes_nothing():
  before = benchmark_files()
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
  result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()) == 1 and "nothing measured" in result.stdout
  assert benchmark_files() == before
