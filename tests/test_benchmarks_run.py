"""benchmarks.run without running anything: the markdown and plot drawn from stored results, and
the choices made on the validation split (with a fake command runner)."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from benchmarks import common
from benchmarks import run

STORED = {
    # Rows as older versions stored them (no "run" key: it comes from --output_dir).
    "accuracy": {"machine": "m", "date": "d", "rows": [
        {"name": "teacher", "accuracy": 0.9, "epsilon": "inf (not private)",
         "commands": ["python -m dpdfd_tf.train_teacher --output_dir=benchmarks/runs/teacher"]},
        {"name": "sigma 0", "accuracy": 0.75, "epsilon": float("inf"), "noise_multiplier": 0.0,
         "steps": 1000, "commands": ["python -m dpdfd_tf.distill --noise_multiplier=0 "
                                     "--output_dir=benchmarks/runs/student_sigma0"]},
        {"name": "eps 10", "accuracy": 0.1, "epsilon": 9.998, "noise_multiplier": 536.0,
         "steps": 1000, "commands": ["python -m dpdfd_tf.distill --epsilon=10 "
                                     "--output_dir=benchmarks/runs/student_eps10"]},
        {"name": "eps 1000", "run": "student_eps1000", "accuracy": 0.5, "epsilon": 999.7,
         "noise_multiplier": 5.0, "steps": 1000, "commands": ["c"]},
    ]},
    "privacy": {"machine": "m", "date": "d", "rows": [
        {"name": "dp-sgd", "run": "dpsgd_eps10", "unit": "dp_sgd", "accuracy": 0.8,
         "epsilon": 9.997, "commands": ["c"]},
        {"name": "ens 10", "run": "ensemble_eps10", "unit": "teacher_ensemble",
         "accuracy": 0.6, "epsilon": 9.995, "commands": ["c"]},
        {"name": "ens 10 guided", "run": "ensemble_eps10_guided", "unit": "teacher_ensemble",
         "accuracy": 0.7, "epsilon": 9.99, "commands": ["c"]},
        {"name": "ens sigma 0", "run": "ensemble_sigma0", "unit": "teacher_ensemble",
         "accuracy": 0.9, "epsilon": float("inf"), "commands": ["c"]},
    ]},
    "speed": {"batch_size": 256, "timed_steps": 40, "machine": "m", "date": "d",
              "tensorflow": "2", "command": "python -m benchmarks.step_time",
              "median_ms": {"dpdfd": 1.0, "dpdfd_xla": 2.0, "no_dp": 1.0, "no_dp_xla": 2.0},
              "dp_overhead_ratio": 1.0, "dp_overhead_ratio_xla": 1.0,
              "xla_over_plain_ratio": 2.0},
}


def test_utility_series_picks_the_curves_and_references():
  series, references = run.utility_series(STORED)
  assert series == {"DPDFD, teacher unit": [(9.998, 0.1), (999.7, 0.5)],
                    "DPDFD, ensemble unit": [(9.995, 0.6)],
                    "DP-SGD on the real data": [(9.997, 0.8)]}
  assert references == {"non-private teacher": 0.9,
                        "DPDFD student, sigma = 0 (not private)": 0.75}


def test_best_ensemble_row_is_private_and_most_accurate():
  assert run.best_ensemble_row(STORED)["run"] == "ensemble_eps10_guided"
  assert run.best_ensemble_row({}) is None


@pytest.mark.parametrize("mode", [run.FULL, run.QUICK_MODE])
def test_markdown_and_plot_from_stored_results(tmp_path, mode):
  mode = dataclasses.replace(mode, results_dir=str(tmp_path),
                             markdown=str(tmp_path / "BENCHMARKS.md"))
  results = dict(STORED, speed=dict(
      STORED["speed"], cpus=2, other_load_cores=1.5,
      mechanisms={"batch_size": 256, "timed_steps": 10, "target_ratio": 3.0,
                  "median_ms": {"output_gradient": 50.0, "dp_optimizer": 5000.0},
                  "dp_optimizer_over_output_gradient": 100.0},
      scaling=[{"batch_size": 64, "timed_steps": 20, "median_ms": 50.0, "steps_per_second": 20.0,
                "samples_per_second": 1280.0, "peak_rss_mib_after_build": 600.0,
                "peak_rss_mib": 700.0}]))
  run.write_markdown(mode, results)
  text = open(mode.markdown).read()
  assert os.path.exists(tmp_path / "utility_vs_epsilon.png")
  assert "| DPDFD, teacher unit | 10.0% | 50.0% |" in text
  assert "100.0x" in text and "| 64 | 20.00 | 1280 |" in text and "loaded" in text
  assert ("DP-MERF" in text) == (mode.name == "full")
  assert ("smoke scale" in text) == (mode.name == "quick")


def test_last_run_line_gives_each_section_its_time():
  # A section rerun alone later (accuracy: 1 minute) does not change the whole run's line.
  results = {"last_run": {"wall_seconds": 600.0, "machine": "m", "date": "d", "cpus": 2,
                          "other_load_cores": 0.0, "failed_sections": [], "reused_runs": 0,
                          "section_seconds": {"accuracy": 240.0, "speed": 30.0}},
             "accuracy": {"machine": "m", "date": "e", "wall_seconds": 60.0, "reused_runs": 3,
                          "rows": []}}
  (line, _) = run.last_run_lines(results, "The last whole run")
  assert line.startswith("The last whole run took 10.0 minutes on m, d.")
  assert line.endswith("Per section: accuracy 4.0 min, speed 0.5 min.")
  assert run.section_lines(results["accuracy"]) == (
      "Machine: m; measured e; the section took 1.0 minutes, reusing 3 finished runs.")


def test_older_speed_results_still_draw(tmp_path):
  mode = dataclasses.replace(run.FULL, results_dir=str(tmp_path),
                             markdown=str(tmp_path / "BENCHMARKS.md"))
  run.write_markdown(mode, {"speed": STORED["speed"]})
  assert "DPDFD / non-private step: 1.000" in open(mode.markdown).read()


def test_audit_section_without_its_module_says_what_is_missing(monkeypatch):
  monkeypatch.setitem(sys.modules, "benchmarks.audit", None)  # import raises ImportError
  monkeypatch.delattr(sys.modules["benchmarks"], "audit", raising=False)
  with pytest.raises(RuntimeError, match="benchmarks/audit.py"):
    run.audit_section(run.Context(run.FULL, "benchmarks/runs", {}))


def test_other_load_is_a_non_negative_number_of_cores():
  cores = common.OtherLoad().cores()
  assert cores is None or cores >= 0


class FakeRuns:
  """Stands in for benchmarks.common.run: distill writes a finished run, evaluate prints the
  accuracy the test gave that run on that split. Records every command."""

  def __init__(self, runs_dir, accuracies):
    self.runs_dir, self.accuracies, self.commands = runs_dir, accuracies, []

  def __call__(self, command, echo=True):
    del echo
    self.commands.append(command)
    flags_ = dict(part[2:].split("=", 1) for part in command if part.startswith("--") and
                  "=" in part)
    if command[2] == "dpdfd_tf.distill":
      out = flags_["output_dir"]
      os.makedirs(out, exist_ok=True)
      with open(os.path.join(out, "privacy_report.json"), "w") as f:
        json.dump({"epsilon": 9.99, "noise_multiplier": 2.0, "unit": "teacher_ensemble",
                   "private_steps": 1000}, f)
      open(os.path.join(out, "samples.png"), "wb").close()
      return ""
    assert command[2] == "dpdfd_tf.evaluate"
    split = flags_.get("split", "test")
    name = os.path.basename(os.path.dirname(flags_["model"]))
    return f"{split} accuracy: {self.accuracies[name][split]:.4f}\n"

  def evaluated(self, split):
    return [part for command in self.commands if command[2] == "dpdfd_tf.evaluate"
            and (f"--split={split}" in command or split == "test" and not any(
                p.startswith("--split=") for p in command)) for part in command
            if part.startswith("--model=")]


def fake_context(tmp_path, monkeypatch, accuracies):
  fake = FakeRuns(str(tmp_path / "runs"), accuracies)
  monkeypatch.setattr(run, "run", fake)
  monkeypatch.setattr(run.Context, "data_path", lambda self: "splits.npz")
  mode = dataclasses.replace(run.FULL, results_dir=str(tmp_path),
                             markdown=str(tmp_path / "BENCHMARKS.md"))
  return run.Context(mode, str(tmp_path / "runs"), {}), fake


CHOICE = run.Choice("ensemble, epsilon 10", tuple(
    run.Candidate(name, f"config {name}", (f"--steps={steps}",))
    for name, steps in (("a", 100), ("b", 200), ("c", 300))), grid="steps")


def test_choice_is_made_on_validation_and_only_the_chosen_run_sees_the_test_split(
    tmp_path, monkeypatch):
  # b and c tie on validation (b comes first); c would win on test, a is best on test.
  accuracies = {"a": {"validation": 0.7, "test": 0.95}, "b": {"validation": 0.8, "test": 0.6},
                "c": {"validation": 0.8, "test": 0.9}}
  ctx, fake = fake_context(tmp_path, monkeypatch, accuracies)
  row = run.chosen_row(ctx, CHOICE, "teacher/model")
  assert row["run"] == "b" and row["accuracy"] == 0.6 and row["validation_accuracy"] == 0.8
  assert row["name"] == "ensemble, epsilon 10, config b" and row["flags"] == ["--steps=200"]
  assert fake.evaluated("test") == [f"--model={tmp_path}/runs/b/student"]
  assert len(fake.evaluated("validation")) == 3
  assert all("--data_dir=splits.npz" in command for command in fake.commands
             if "--split=validation" in command)
  assert [c["validation_accuracy"] for c in row["tuning"]["candidates"]] == [0.7, 0.8, 0.8]
  text = "\n".join(run.tuning_lines({"privacy": {"rows": [row]}}))
  assert "| ensemble, epsilon 10, config b | steps | **config b** | 80.0% |" in text
  assert "| config a | 70.0% |" in text and "--output_dir=" in text


def test_a_kept_subset_of_one_is_a_fixed_row_and_none_kept_is_no_row(tmp_path, monkeypatch):
  accuracies = {name: {"validation": 0.5, "test": 0.5} for name in "abc"}
  ctx, fake = fake_context(tmp_path, monkeypatch, accuracies)
  row = run.chosen_row(ctx, CHOICE, "teacher/model", keep=("c",))
  assert row["run"] == "c" and "tuning" not in row
  assert run.chosen_row(ctx, CHOICE, "teacher/model", keep=("z",)) is None
  assert not run.tuning_lines({"privacy": {"rows": [row]}})


def test_epsilon_1_reuses_the_configuration_chosen_at_epsilon_10():
  chosen = run.ENSEMBLE_EPSILON10.candidates[0]
  assert chosen.flags == ("--epsilon=10", "--steps=400")
  again = run.at_epsilon_1(chosen).candidates
  assert [(c.name, c.flags) for c in again] == [("ensemble_eps1_400",
                                                 ("--epsilon=1", "--steps=400"))]
  assert run.at_epsilon_1(run.ENSEMBLE_EPSILON10.candidates[1]).candidates[0].name == (
      "ensemble_eps1")


def test_teachers_train_on_records_disjoint_from_the_validation_split(tmp_path):
  path = str(tmp_path / "splits.npz")
  run.write_splits(path, 100, 30)
  train_images, _ = run.data.load("fashion_mnist", "train")
  np.testing.assert_array_equal(run.data.load("fashion_mnist", "train", path)[0],
                                train_images[:100])
  np.testing.assert_array_equal(run.data.load("fashion_mnist", "validation", path)[0],
                                train_images[-30:])
  assert len(run.data.load("fashion_mnist", "test", path)[1]) == 10000
  with pytest.raises(ValueError, match="overlap"):
    run.write_splits(path, 55000, 5001)
