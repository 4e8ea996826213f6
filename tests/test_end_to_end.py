"""End to end through the command lines, as a user runs them (slow)."""

import json
import math
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest

from conftest import run_command
from conftest import start_command

pytestmark = pytest.mark.slow


def accuracy_from(output):
  """The figure on the command's closing 'test accuracy: X' (or 'train accuracy') line."""
  return float(re.findall(r"(?:test|train) accuracy: ([0-9.]+)", output)[-1])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("smoke")
  teacher = run_command("train_teacher", "--flagfile=flags/smoke.cfg", f"--output_dir={root}/teacher")
  assert teacher.returncode == 0, teacher.stderr
  distill = run_command("distill", "--flagfile=flags/smoke.cfg", f"--teacher={root}/teacher/model",
                        "--epsilon=10", f"--output_dir={root}/dpdfd")
  assert distill.returncode == 0, distill.stderr
  return root, teacher, distill


def test_smoke_pipeline_writes_every_artifact(smoke_run):
  root, teacher, distill = smoke_run
  assert accuracy_from(teacher.stdout) > 0.8
  for name in ("student/saved_model.pb", "generator/saved_model.pb", "privacy_report.json",
               "metrics.jsonl", "samples.png", "run_config.json", "checkpoints/checkpoint"):
    assert os.path.exists(root / "dpdfd" / name), name
  report = json.loads((root / "dpdfd" / "privacy_report.json").read_text())
  assert report["private"] is True and report["private_steps"] == 40
  assert report["epsilon"] <= 10.0 and report["unit"] == "teacher"
  assert report["batch_size"] == 64 and report["noise_multiplier"] > 0
  assert "privacy report" in distill.stdout and "-DP" in distill.stdout
  lines = [json.loads(l) for l in (root / "dpdfd" / "metrics.jsonl").read_text().splitlines()]
  assert [l["private_steps"] for l in lines] == [10, 20, 30, 40]
  assert all(float(l["epsilon"]) <= 10.0 for l in lines)
  assert "distillation_loss" not in lines[0]  # private run: no raw teacher-derived metric
  assert "epsilon" in distill.stderr  # progress lines


def test_evaluate_and_generate(smoke_run):
  root, _, _ = smoke_run
  student = run_command("evaluate", "--dataset=digits", f"--model={root}/dpdfd/student")
  assert student.returncode == 0, student.stderr
  assert 0.0 <= accuracy_from(student.stdout) <= 1.0
  teacher = run_command("evaluate", "--dataset=digits", f"--model={root}/teacher/model")
  assert accuracy_from(teacher.stdout) > 0.8
  out = root / "synthetic.npz"
  generated = run_command("generate", f"--generator={root}/dpdfd/generator", "--num_samples=25",
                          f"--output={out}", "--generate_batch_size=10")
  assert generated.returncode == 0, generated.stderr
  with np.load(out) as archive:
    assert archive["images"].shape == (25, 8, 8, 1) and archive["labels"].shape == (25,)
    assert archive["images"].min() >= 0 and archive["images"].max() <= 1
  assert os.path.exists(root / "synthetic.png")
  # The synthetic set is a first-class data source.
  retrain = run_command("evaluate", "--dataset=digits", f"--data_dir={out}", "--split=train",
                        f"--model={root}/dpdfd/student")
  assert retrain.returncode == 0, retrain.stderr
  assert accuracy_from(retrain.stdout) == 1.0  # the labels are the student's own answers


def test_rerun_resumes_from_checkpoint_and_keeps_the_count(smoke_run):
  root, _, _ = smoke_run
  copy = root / "interrupted"
  shutil.copytree(root / "dpdfd", copy)
  first = json.loads((copy / "privacy_report.json").read_text())
  for name in ("privacy_report.json", "student", "generator"):  # as if killed before the end
    path = copy / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  again = run_command("distill", "--flagfile=flags/smoke.cfg", f"--teacher={root}/teacher/model",
                      "--epsilon=10", f"--output_dir={copy}")
  assert again.returncode == 0, again.stderr
  assert "resumed" in again.stderr
  report = json.loads((copy / "privacy_report.json").read_text())
  assert report["private_steps"] == 40 and report["epsilon"] == first["epsilon"]
  different = run_command("distill", "--flagfile=flags/smoke.cfg", f"--teacher={root}/teacher/model",
                          "--epsilon=5", f"--output_dir={root}/dpdfd")
  assert different.returncode != 0 and "finished run" in different.stderr


def test_non_private_baseline_reports_infinity(smoke_run, tmp_path):
  root, _, _ = smoke_run
  result = run_command("distill", "--flagfile=flags/smoke.cfg", f"--teacher={root}/teacher/model",
                       "--generator_mode=adversarial", "--noise_multiplier=3", "--steps=10",
                       f"--output_dir={tmp_path}/baseline")
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / "baseline" / "privacy_report.json").read_text())
  assert report["private"] is False and report["epsilon"] == "inf"
  assert "NOT PRIVATE" in result.stdout and "NOT PRIVATE" in result.stderr


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_teacher_and_short_distillation(tmp_path):
  teacher = run_command("train_teacher", "--flagfile=flags/fashion_mnist.cfg", "--epochs=1",
                        f"--output_dir={tmp_path}/teacher")
  assert teacher.returncode == 0, teacher.stderr
  assert accuracy_from(teacher.stdout) > 0.8
  distill = run_command("distill", "--flagfile=flags/fashion_mnist.cfg",
                        f"--teacher={tmp_path}/teacher/model", "--noise_multiplier=0",
                        "--steps=150", "--generator_warmup_steps=100", "--batch_size=128",
                        f"--output_dir={tmp_path}/dpdfd")
  assert distill.returncode == 0, distill.stderr
  student = run_command("evaluate", "--dataset=fashion_mnist", f"--model={tmp_path}/dpdfd/student")
  # 150 teacher-free steps without noise already beat chance (10%) by a wide margin.
  assert accuracy_from(student.stdout) > 0.3


def wait_until(condition, timeout=300):
  """Polls ``condition`` (a cheap file-system check) until it holds; fails on timeout."""
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, f"timed out waiting for {condition}"
    time.sleep(0.1)


def interrupt_distill(args, ready, signal_number):
  """Starts distill, sends ``signal_number`` once ``ready()`` holds; returns (exit code, stderr)."""
  process = start_command("distill", *args)
  wait_until(lambda: ready() or process.poll() is not None)
  process.send_signal(signal_number)
  _, stderr = process.communicate(timeout=300)
  return process.returncode, stderr


def test_sigterm_checkpoints_and_rerun_finishes_the_same_budget(smoke_run, tmp_path):
  root, _, _ = smoke_run
  out = tmp_path / "killed"
  args = ["--flagfile=flags/smoke.cfg", f"--teacher={root}/teacher/model", "--epsilon=10",
          "--steps=300", "--checkpoint_every=1000", f"--output_dir={out}"]
  metrics = out / "metrics.jsonl"
  returncode, stderr = interrupt_distill(
      args, lambda: metrics.exists() and metrics.read_text().strip(), signal.SIGTERM)
  assert returncode == 130, stderr
  assert "checkpoint saved" in stderr and not (out / "privacy_report.json").exists()
  assert (out / "checkpoints" / "checkpoint").exists()

  again = run_command("distill", *args)
  assert again.returncode == 0, again.stderr
  assert "resumed" in again.stderr
  report = json.loads((out / "privacy_report.json").read_text())
  assert report["private_steps"] == 300
  from dpdfd_tf import accounting  # pylint: disable=g-import-not-at-top
  uninterrupted = accounting.epsilon(
      accounting.Release(report["noise_multiplier"], report["batch_size"], 300), 1e-5)
  assert report["epsilon"] == uninterrupted <= 10.0


def test_sigkill_after_a_checkpoint_and_rerun_match_an_uninterrupted_run(digits_teacher_path,
                                                                          tmp_path):
  """No handler runs on SIGKILL: the rerun must resume from the periodic checkpoint alone."""
  steps = 60

  def distill_args(out):
    return ["--flagfile=flags/smoke.cfg", f"--teacher={digits_teacher_path}",
            "--noise_multiplier=5", f"--steps={steps}", "--checkpoint_every=10",
            "--noise_seed=1", "--seed=3", f"--output_dir={out}"]

  killed = tmp_path / "killed"
  returncode, stderr = interrupt_distill(
      distill_args(killed), (killed / "checkpoints" / "checkpoint").exists, signal.SIGKILL)
  assert returncode == -signal.SIGKILL, stderr
  for name in ("privacy_report.json", "student", "generator"):
    assert not (killed / name).exists(), name

  again = run_command("distill", *distill_args(killed))
  assert again.returncode == 0, again.stderr
  assert "resumed" in again.stderr
  uninterrupted = run_command("distill", *distill_args(tmp_path / "uninterrupted"))
  assert uninterrupted.returncode == 0, uninterrupted.stderr
  report = json.loads((killed / "privacy_report.json").read_text())
  reference = json.loads((tmp_path / "uninterrupted" / "privacy_report.json").read_text())
  assert report["private_steps"] == reference["private_steps"] == steps
  assert math.isfinite(reference["epsilon"])
  assert report["epsilon"] == pytest.approx(reference["epsilon"], rel=1e-9)
