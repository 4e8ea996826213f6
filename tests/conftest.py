"""Shared fixtures: tiny models and a small teacher trained on scikit-learn digits."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import dpdfd_tf  # noqa: F401  (import-order workarounds first)
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data
from dpdfd_tf._compat import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(module, args):
  """Argument list and keyword arguments shared by run_command and start_command."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return [sys.executable, "-m", f"dpdfd_tf.{module}", *args], dict(cwd=REPO, text=True, env=env)


def run_command(module, *args, timeout=600):
  """Runs ``python -m dpdfd_tf.<module> args`` and returns the CompletedProcess."""
  command, options = _command(module, args)
  return subprocess.run(command, capture_output=True, timeout=timeout, **options)


def start_command(module, *args):
  """Starts ``python -m dpdfd_tf.<module> args`` in the background and returns the Popen."""
  command, options = _command(module, args)
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def assert_one_line_error(result, pattern=""):
  """A clean refusal: non-zero exit, no traceback, one error line and it is stderr's last."""
  assert result.returncode != 0, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if "error" in line.lower()]
  assert errors == lines[-1:], result.stderr
  assert re.search(pattern, errors[0]), errors[0]


def assert_rejected(module, args, watched_dir, pattern=""):
  """Runs a command that must refuse its input: one error line, watched_dir left as it was."""
  before = tree_snapshot(watched_dir)
  assert_one_line_error(run_command(module, *args), pattern)
  assert tree_snapshot(watched_dir) == before


def tree_snapshot(path):
  """{relative path: (size, mtime_ns)} of every file under ``path``."""
  snapshot = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      status = os.stat(full)
      snapshot[os.path.relpath(full, path)] = (status.st_size, status.st_mtime_ns)
  return snapshot


@pytest.fixture(scope="session")
def digits_teacher_path(tmp_path_factory):
  """A small CNN teacher trained on digits (about 90% test accuracy), as a Keras SavedModel."""
  keras.utils.set_random_seed(0)
  images, labels = data.load("digits", "train")
  model = architectures.build_classifier("small_cnn", (8, 8, 1), 10, width=16, name="teacher")
  classification.train_classifier(model, images, labels, epochs=15, batch_size=64, verbose=0)
  path = str(tmp_path_factory.mktemp("teacher") / "model")
  model.save(path, include_optimizer=False)
  return path


@pytest.fixture
def rng():
  return np.random.default_rng(0)
