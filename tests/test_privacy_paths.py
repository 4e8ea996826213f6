"""Every privacy path through the command lines: DP teachers, ensembles, the DP-optimizer student
mechanism and the private teacher-guided generator (slow; scikit-learn digits)."""

import json
import math
import os

import pytest

from conftest import run_command
from dpdfd_tf import accounting

pytestmark = pytest.mark.slow

SMOKE = "--flagfile=flags/smoke.cfg"


def report_of(output_dir):
  with open(os.path.join(output_dir, "privacy_report.json")) as f:
    return json.load(f)


def distill(teacher, output_dir, *flags):
  result = run_command("distill", SMOKE, f"--teacher={teacher}", "--steps=4",
                       "--generator_warmup_steps=2", *flags, f"--output_dir={output_dir}")
  assert result.returncode == 0, result.stderr
  return report_of(output_dir)


@pytest.fixture(scope="module")
def dp_teacher(tmp_path_factory):
  root = tmp_path_factory.mktemp("dp_teacher")
  result = run_command("train_teacher", SMOKE, "--dp_epsilon=5", "--epochs=2",
                       "--teacher_width=8", f"--output_dir={root}")
  assert result.returncode == 0, result.stderr
  with open(os.path.join(root, "teacher.json")) as f:
    return os.path.join(root, "model"), json.load(f)


def test_dp_teacher_is_trained_to_its_epsilon_with_poisson_accounting(dp_teacher):
  _, record = dp_teacher
  privacy = record["privacy"]
  assert record["private"] and privacy["private"] and privacy["unit"] == "dp_sgd"
  assert privacy["epsilon"] <= 5.0
  assert privacy["dataset_size"] == 1437 and privacy["batch_size"] == 64  # digits train split
  release = accounting.Release(privacy["noise_multiplier"], 64, privacy["private_steps"],
                               unit="dp_sgd", dataset_size=1437)
  assert accounting.epsilon(release, 1e-5) == pytest.approx(privacy["epsilon"])


def test_dp_teacher_distilled_without_noise_reports_the_teacher_epsilon(dp_teacher, tmp_path):
  model, record = dp_teacher
  report = distill(model, tmp_path / "run", "--noise_multiplier=0")
  assert report["private"] is True
  assert report["epsilon"] == pytest.approx(record["privacy"]["epsilon"])
  assert report["bound"].startswith("dp_teacher") and report["distillation_epsilon"] == "inf"
  # --teacher_privacy=none forgets the teacher's training: the same run is then not private.
  report = distill(model, tmp_path / "forgotten", "--noise_multiplier=0", "--teacher_privacy=none")
  assert report["private"] is False and report["epsilon"] == "inf"


def test_epsilon_target_met_by_the_dp_teacher_needs_no_noise(dp_teacher, tmp_path):
  model, record = dp_teacher
  report = distill(model, tmp_path / "run", "--epsilon=6", "--generator_mode=adversarial",
                   "--distillation_loss=l1")
  assert report["noise_multiplier"] == 0.0
  assert report["epsilon"] == pytest.approx(record["privacy"]["epsilon"]) and report["epsilon"] <= 6


def test_ensemble_teacher_is_trained_on_shards_and_distilled_in_its_unit(tmp_path):
  result = run_command("train_teacher", SMOKE, "--num_teachers=6", "--ensemble_epochs=5",
                       f"--output_dir={tmp_path}/ensemble")
  assert result.returncode == 0, result.stderr
  with open(tmp_path / "ensemble" / "teacher.json") as f:
    record = json.load(f)
  assert record["num_teachers"] == 6 and record["records_per_teacher"] == 1437 // 6
  report = distill(tmp_path / "ensemble" / "model", tmp_path / "mean", "--epsilon=50",
                   "--strategy=mirrored")  # the tf.distribute path, with one local device
  assert report["unit"] == "teacher_ensemble" and report["num_teachers"] == 6
  assert report["epsilon"] <= 50
  # z = sigma * M / (2 sqrt(B)): six teachers need six times less noise than one.
  single = accounting.calibrate_noise_multiplier(50, 1e-5, accounting.Release(0.0, 64, 4))
  assert report["noise_multiplier"] == pytest.approx(single / 6, rel=2e-3)
  report = distill(tmp_path / "ensemble" / "model", tmp_path / "sample", "--epsilon=50",
                   "--teacher_aggregation=sample")
  assert report["unit"] == "teacher_sampled" and report["epsilon"] <= 50
  evaluate = run_command("evaluate", SMOKE, f"--model={tmp_path}/mean/student")
  assert evaluate.returncode == 0, evaluate.stderr


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  root = tmp_path_factory.mktemp("teacher")
  result = run_command("train_teacher", SMOKE, "--epochs=2", f"--output_dir={root}")
  assert result.returncode == 0, result.stderr
  return os.path.join(root, "model")


def test_dp_optimizer_student_mechanism_is_accounted_with_sensitivity_2cb(teacher, tmp_path):
  report = distill(teacher, tmp_path / "run", "--student_mechanism=dp_optimizer",
                   "--epsilon=1000")
  assert report["unit"] == "dp_optimizer" and report["epsilon"] <= 1000
  assert report["effective_noise_multiplier"] == pytest.approx(
      report["noise_multiplier"] / (2 * 64))


def test_dp_teacher_guided_generator_is_composed_into_the_target(teacher, tmp_path):
  # (with --mixed_precision too: the DP arithmetic and the accounting are the same)
  report = distill(teacher, tmp_path / "run", "--generator_mode=dp_teacher_guided",
                   "--distillation_loss=l1", "--epsilon=20", "--mixed_precision")
  assert report["private"] and report["epsilon"] <= 20
  names = [release["name"] for release in report["releases"]]
  assert names == ["student rows", "generator image gradients"]
  assert report["releases"][1]["private_steps"] == 4  # one generator release per iteration
  alone = accounting.epsilon(accounting.Release(report["noise_multiplier"], 64, 4), 1e-5)
  assert alone < report["epsilon"] and not math.isinf(alone)
