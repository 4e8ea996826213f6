"""The membership-inference audit's metrics, scores and bookkeeping (no data, no training)."""

import json
import math
import os

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

import dpdfd_tf  # noqa: F401  (import-order workarounds first)
from benchmarks import audit


def test_perfectly_separated_scores():
  members, non_members = [5.0, 6.0, 7.0], [1.0, 2.0, 3.0]
  assert audit.roc_auc(members, non_members) == 1.0
  assert audit.tpr_at_fpr(members, non_members, 0.01) == 1.0
  assert audit.roc_auc(non_members, members) == 0.0
  assert audit.tpr_at_fpr(non_members, members, 0.01) == 0.0


def test_identical_distributions_give_one_half():
  assert audit.roc_auc([1.0, 1.0], [1.0, 1.0]) == 0.5  # every pair is a tie: 1/2 each
  assert audit.roc_auc([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == 0.5


def test_hand_computed_auc():
  # Pairs (member, non-member): 3>2, 3>0, 1<2, 1>0: three wins of four.
  assert audit.roc_auc([3.0, 1.0], [2.0, 0.0]) == 0.75
  # 1 vs 1 is a tie (1/2), 1>0, 2>1, 2>0: 3.5 of 4.
  assert audit.roc_auc([1.0, 2.0], [1.0, 0.0]) == 0.875


def test_hand_computed_roc_curve():
  fpr, tpr, thresholds = audit.roc_curve([3.0, 1.0], [2.0, 0.0])
  # Thresholds +inf, 3, 2, 1, 0 flag nothing, {3}, {3, 2}, {3, 2, 1}, everything.
  np.testing.assert_array_equal(thresholds, [np.inf, 3.0, 2.0, 1.0, 0.0])
  np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
  np.testing.assert_array_equal(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])


def test_hand_computed_tpr_at_fpr():
  non_members = np.arange(100.0)  # 0, 1, ..., 99
  members = [99.5, 98.5, 50.0, 10.0]
  # Threshold 98.5 flags the members 99.5 and 98.5 and one non-member (99): FPR 1%, TPR 2/4.
  # Threshold 98 would flag a second non-member (FPR 2%).
  assert audit.tpr_at_fpr(members, non_members, 0.01) == 0.5
  # At FPR 0 only 99.5 can be flagged.
  assert audit.tpr_at_fpr(members, non_members, 0.0) == 0.25
  # Ties are never split: a member tied with a non-member needs that non-member flagged too.
  assert audit.tpr_at_fpr([99.0], non_members, 0.0) == 0.0
  assert audit.tpr_at_fpr([99.0], non_members, 0.01) == 1.0


def test_auc_agrees_with_sklearn(rng):
  members = np.round(rng.normal(0.3, 1.0, 700), 1)  # rounding makes ties
  non_members = np.round(rng.normal(0.0, 1.0, 500), 1)
  labels = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
  expected = sklearn_metrics.roc_auc_score(labels, np.concatenate([members, non_members]))
  assert audit.roc_auc(members, non_members) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_agrees_with_sklearn(rng):
  members = np.round(rng.normal(0.5, 1.0, 300), 1)
  non_members = np.round(rng.normal(0.0, 1.0, 400), 1)
  labels = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
  expected_fpr, expected_tpr, _ = sklearn_metrics.roc_curve(
      labels, np.concatenate([members, non_members]), drop_intermediate=False)
  fpr, tpr, _ = audit.roc_curve(members, non_members)
  np.testing.assert_allclose(fpr, expected_fpr)
  np.testing.assert_allclose(tpr, expected_tpr)


def test_non_finite_or_empty_scores_are_refused():
  with pytest.raises(ValueError):
    audit.roc_auc([1.0, np.nan], [0.0])
  with pytest.raises(ValueError):
    audit.tpr_at_fpr([], [0.0])


def _interval_width(interval):
  return interval[1] - interval[0]


def test_bootstrap_interval_contains_estimate_and_narrows(rng):
  def sample(size):
    return rng.normal(0.5, 1.0, size), rng.normal(0.0, 1.0, size)

  small = sample(50)
  large = sample(2000)
  small_intervals = audit.bootstrap_intervals(*small, resamples=200, seed=0)
  large_intervals = audit.bootstrap_intervals(*large, resamples=200, seed=0)
  for scores, intervals in ((small, small_intervals), (large, large_intervals)):
    estimate = audit.attack_metrics(*scores)
    for key in ("auc", "tpr_at_fpr"):
      low, high = intervals[key]
      assert low <= estimate[key] <= high, (key, estimate, intervals)
  assert _interval_width(large_intervals["auc"]) < _interval_width(small_intervals["auc"]) / 3
  assert (_interval_width(large_intervals["tpr_at_fpr"])
          < _interval_width(small_intervals["tpr_at_fpr"]))
  # Seeded: the same call gives the same interval.
  assert audit.bootstrap_intervals(*small, resamples=200, seed=0) == small_intervals


def test_dp_tpr_limit():
  assert audit.dp_tpr_limit(math.inf, 1e-5) is None
  assert audit.dp_tpr_limit(1.0, 1e-5) == pytest.approx(math.e * 0.01 + 1e-5)
  assert audit.dp_tpr_limit(10.0, 1e-5) == 1.0


def test_cross_entropy_of_logits_and_ensembles():
  # Logits [B, K]: log 3 and 0 give probabilities 3/4 and 1/4.
  losses, classes = audit.cross_entropy([[math.log(3.0), 0.0], [math.log(3.0), 0.0]], [0, 1])
  np.testing.assert_allclose(losses, [-math.log(0.75), -math.log(0.25)])
  np.testing.assert_array_equal(classes, [0, 0])
  # Ensemble logits [B, M, K]: members (1/2, 1/2) and (3/4, 1/4) average to (5/8, 3/8).
  ensemble = [[[0.0, 0.0], [math.log(3.0), 0.0]]]
  losses, classes = audit.cross_entropy(ensemble, [1])
  np.testing.assert_allclose(losses, [-math.log(3.0 / 8.0)])
  np.testing.assert_array_equal(classes, [0])
  # Large logits stay finite.
  losses, _ = audit.cross_entropy([[1000.0, -1000.0]], [1])
  assert losses[0] == pytest.approx(2000.0)


def _touch(path, content=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(content)


def test_find_targets_skips_missing_and_unfinished_runs(tmp_path):
  runs = str(tmp_path)
  _touch(os.path.join(runs, "teacher", "model", "saved_model.pb"))
  _touch(os.path.join(runs, "teacher", "teacher.json"), json.dumps({"private": False}))
  _touch(os.path.join(runs, "ensemble250", "model", "saved_model.pb"))
  _touch(os.path.join(runs, "ensemble250", "teacher.json"),
         json.dumps({"private": False, "num_teachers": 250}))
  _touch(os.path.join(runs, "dpsgd_eps10", "model", "saved_model.pb"))
  _touch(os.path.join(runs, "dpsgd_eps10", "teacher.json"),
         json.dumps({"private": True, "privacy": {"epsilon": 9.99, "delta": 1e-5}}))
  _touch(os.path.join(runs, "dpsgd_eps1", "model", "saved_model.pb"))  # still training
  for name, epsilon in (("student_eps10", 9.998), ("student_sigma0", "inf")):
    _touch(os.path.join(runs, name, "student", "saved_model.pb"))
    _touch(os.path.join(runs, name, "privacy_report.json"), json.dumps(
        {"epsilon": epsilon, "delta": 1e-5, "teacher": f"{runs}/teacher/model",
         "generator_mode": "student", "status": "finished"}))
  _touch(os.path.join(runs, "interrupted", "student", "saved_model.pb"))  # no report
  targets = audit.find_targets(runs)
  assert [t["name"] for t in targets] == ["teacher", "ensemble250", "dpsgd_eps10",
                                          "student_eps10", "student_sigma0"]
  assert [t["epsilon"] for t in targets] == ["inf", "inf", 9.99, 9.998, "inf"]
  assert "M = 250" in targets[1]["kind"]
  assert targets[3]["kind"] == "student distilled from teacher (student generator)"
  assert audit.find_targets(os.path.join(runs, "absent")) == []


def _attack(auc, tpr, auc_ci, tpr_ci):
  return {"auc": auc, "tpr_at_fpr": tpr, "ci": {"auc": auc_ci, "tpr_at_fpr": tpr_ci}}


def test_markdown_section():
  result = {
      "quick": False, "members": 5000, "non_members": 5000, "fpr_target": 0.01,
      "bootstrap_resamples": 200, "roc_plot": "benchmarks/results/mia_roc.png",
      "command": audit.COMMAND, "machine": "x86_64, 2 CPU cores", "date": "2026-12-05",
      "reference": {"architecture": "small_cnn", "width": 16, "epochs": 3,
                    "training_records": 5000},
      "rows": [
          {"name": "teacher", "kind": "teacher (non-private)", "epsilon": "inf",
           "member_accuracy": 0.93, "non_member_accuracy": 0.90, "dp_tpr_limit": None,
           "loss": _attack(0.53, 0.012, [0.52, 0.54], [0.008, 0.016]),
           "calibrated": _attack(0.55, 0.02, [0.54, 0.56], [0.015, 0.025])},
          {"name": "dpsgd_eps1", "kind": "DP-SGD classifier", "epsilon": 0.9991,
           "member_accuracy": 0.75, "non_member_accuracy": 0.75,
           "dp_tpr_limit": audit.dp_tpr_limit(0.9991, 1e-5),
           "loss": _attack(0.50, 0.01, [0.49, 0.51], [0.006, 0.014]),
           "calibrated": _attack(0.501, 0.011, [0.49, 0.51], [0.007, 0.015])},
      ]}
  lines = audit.markdown_lines(result)
  text = "\n".join(lines)
  assert lines[0] == "## Membership inference audit"
  assert "`python -m benchmarks.run --only=audit`" in text
  assert "![membership inference ROC curves](benchmarks/results/mia_roc.png)" in text
  assert "| teacher: teacher (non-private) | inf | 93.0% / 90.0% | 0.530 [0.520, 0.540] |" in text
  assert "| 0.9991 |" in text and "| 2.7% |" in text
  assert "Measurable leakage (a 95% interval above chance): teacher (calibrated attack" in text
  assert "dpsgd_eps1 (" not in text  # at chance: not listed as leaking
  assert "largest gap here is teacher's, 3.0 points" in text
  assert "stays under its limit" in text


def test_markdown_reading_without_leakage():
  at_chance = _attack(0.49, 0.01, [0.47, 0.51], [0.004, 0.02])
  below = _attack(0.47, 0.008, [0.45, 0.49], [0.002, 0.015])
  result = {
      "quick": True, "members": 1000, "non_members": 1000, "fpr_target": 0.01,
      "bootstrap_resamples": 200, "roc_plot": None, "command": audit.COMMAND,
      "reference": {"architecture": "small_cnn", "width": 16, "epochs": 3,
                    "training_records": 5000},
      "rows": [{"name": "student_eps10", "kind": "student", "epsilon": 9.999,
                "member_accuracy": 0.11, "non_member_accuracy": 0.10,
                "dp_tpr_limit": 1.0, "loss": at_chance, "calibrated": below}]}
  text = "\n".join(audit.markdown_lines(result))
  assert "No audited model leaks measurably" in text
  assert "An AUC interval below 0.5 (student_eps10)" in text
  assert "(quick mode)" in text and "![" not in text
  json.dumps(result)  # what run.py stores must be JSON


def test_audited_members_come_from_the_records_the_teachers_trained_on():
  train_images, _ = audit.data.load(audit.DATASET, "train")
  test_images, _ = audit.data.load(audit.DATASET, "test")
  (members, _, non_members, _, reference, _) = audit.audit_samples(50, member_records=200)
  # Each audited member is one of the first 200 training records (the benchmark's validation
  # records and the rest of the split are never called members).
  first = train_images[:200].reshape(200, -1)
  assert all(np.any(np.all(first == member.reshape(1, -1), axis=1)) for member in members)
  assert len(members) == len(non_members) == 50
  assert len(reference) == len(test_images) - audit.SAMPLE_SIZE
  # The reference never sees an audited non-member.
  flat_reference = {row.tobytes() for row in reference.reshape(len(reference), -1)}
  assert not any(row.tobytes() in flat_reference for row in non_members.reshape(50, -1))
