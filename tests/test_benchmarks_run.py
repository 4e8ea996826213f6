"""benchmarks.run without running anything: the markdown and plot drawn from stored results."""

import dataclasses
import os
import sys

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
