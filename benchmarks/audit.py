r"""Membership-inference audit of the benchmark models on Fashion-MNIST.

  python -m benchmarks.run --only=audit

Members are records the teachers were trained on (the first records of the train split, 55,000
in benchmarks.run's full mode, whose last 5,000 are its validation split: the single teacher and
the DP-SGD classifiers used all of them, the ensemble's disjoint shards cover them all);
non-members are held-out records (the test split). The same fixed-seed samples of each are
scored by every model found under the runs directory:

  * ``teacher/model`` (non-private teacher), ``ensemble<M>/model`` (teacher ensemble, averaged
    softmax), ``dpsgd_eps1/model`` and ``dpsgd_eps10/model`` (DP-SGD classifiers),
  * every ``<name>/student`` with a ``privacy_report.json`` next to it (DPDFD students).

Two attacks, both thresholding one score per record (higher = "member"):

  * loss (Yeom et al. 2018): minus the cross-entropy of the true label;
  * calibrated (difficulty calibration, Watson et al. 2022): minus (target loss - reference
    loss), where the reference is a small classifier that saw neither the audited members nor the
    audited non-members, so records that are merely easy stop counting as evidence.

Reported per model and attack: ROC AUC and TPR at 1% FPR with 95% bootstrap intervals, and a ROC
plot of the loss attack. The metrics are plain numpy (ties count 1/2 in the AUC).
"""

import json
import math
import os
import time

import numpy as np

import dpdfd_tf  # noqa: F401  (sets up tf.keras first)
from dpdfd_tf import accounting
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data
from dpdfd_tf import teachers
from dpdfd_tf._compat import keras
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "python -m benchmarks.run --only=audit"
DATASET = "fashion_mnist"
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

SAMPLE_SIZE = 5000  # audited members and, separately, audited non-members
QUICK_SAMPLE_SIZE = 1000
SAMPLE_SEED = 0
FPR_TARGET = 0.01
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

# The reference model of the calibrated attack, cached under {runs}/mia_reference/.
REFERENCE_DIR = "mia_reference"
REFERENCE_MARKER = "reference.json"
REFERENCE_CONFIG = {"architecture": "small_cnn", "width": 16, "epochs": 3, "batch_size": 128,
                    "seed": 0, "sample_seed": SAMPLE_SEED, "held_out_test_records": SAMPLE_SIZE}

ROC_PLOT = "benchmarks/results/mia_roc.png"
QUICK_ROC_PLOT = "benchmarks/results/quick/mia_roc.png"


# ---------------------------------------------------------------------------------------------
# Metrics (plain numpy).


def _scores(values, what):
  values = np.asarray(values, np.float64).ravel()
  if not len(values):
    raise ValueError(f"no {what} scores")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{what} scores must be finite")
  return values


def roc_auc(member_scores, non_member_scores):
  """P(score of a random member > score of a random non-member), ties counted 1/2.

  The Mann-Whitney U statistic from average ranks: O(n log n), exact with ties.
  """
  members = _scores(member_scores, "member")
  non_members = _scores(non_member_scores, "non-member")
  _, inverse, counts = np.unique(np.concatenate([members, non_members]), return_inverse=True,
                                 return_counts=True)
  average_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, tied values share the mean
  member_rank_sum = average_ranks[inverse[:len(members)]].sum()
  wins = member_rank_sum - len(members) * (len(members) + 1) / 2.0
  return float(wins / (len(members) * len(non_members)))


def roc_curve(member_scores, non_member_scores):
  """(fpr, tpr, thresholds) of the rule "member if score >= threshold".

  One point per distinct score, from the strictest threshold (+inf: nothing flagged, (0, 0)) to
  the loosest (everything flagged, (1, 1)). Tied scores are never split, so every point is
  reachable by a deterministic threshold.
  """
  members = np.sort(_scores(member_scores, "member"))
  non_members = np.sort(_scores(non_member_scores, "non-member"))
  thresholds = np.unique(np.concatenate([members, non_members]))[::-1]
  tpr = 1.0 - np.searchsorted(members, thresholds, side="left") / len(members)
  fpr = 1.0 - np.searchsorted(non_members, thresholds, side="left") / len(non_members)
  return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]),
          np.concatenate([[np.inf], thresholds]))


def tpr_at_fpr(member_scores, non_member_scores, fpr_target=FPR_TARGET):
  """The highest TPR of any threshold whose FPR is at most ``fpr_target``."""
  fpr, tpr, _ = roc_curve(member_scores, non_member_scores)
  return float(tpr[fpr <= fpr_target + 1e-12].max())


def attack_metrics(member_scores, non_member_scores, fpr_target=FPR_TARGET):
  return {"auc": roc_auc(member_scores, non_member_scores),
          "tpr_at_fpr": tpr_at_fpr(member_scores, non_member_scores, fpr_target)}


def bootstrap_intervals(member_scores, non_member_scores, resamples=BOOTSTRAP_RESAMPLES,
                        seed=BOOTSTRAP_SEED, confidence=CONFIDENCE, fpr_target=FPR_TARGET):
  """Percentile bootstrap intervals {metric: [low, high]} for ``attack_metrics``.

  Members and non-members are resampled separately (each with replacement, at its own size):
  they are two independent samples, and keeping their sizes fixed keeps the FPR grid fixed.
  """
  members = _scores(member_scores, "member")
  non_members = _scores(non_member_scores, "non-member")
  rng = np.random.default_rng(seed)
  draws = {"auc": [], "tpr_at_fpr": []}
  for _ in range(resamples):
    resampled = attack_metrics(members[rng.integers(0, len(members), len(members))],
                               non_members[rng.integers(0, len(non_members), len(non_members))],
                               fpr_target)
    for key, value in resampled.items():
      draws[key].append(value)
  tail = 100.0 * (1.0 - confidence) / 2.0
  return {key: [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]
          for key, values in draws.items()}


def dp_tpr_limit(epsilon, delta, fpr=FPR_TARGET):
  """The most TPR an (epsilon, delta)-DP model allows any attack at this FPR: e^eps FPR + delta.

  The hypothesis-testing view of DP (Kairouz et al. 2015), for a game where membership is the
  only thing that differs; None when epsilon is infinite.
  """
  if epsilon is None or math.isinf(epsilon):
    return None
  if epsilon >= math.log(1.0 / fpr):  # the bound is vacuous (and e^eps may overflow)
    return 1.0
  return float(min(1.0, math.exp(epsilon) * fpr + delta))


# ---------------------------------------------------------------------------------------------
# Scores.


def log_probabilities(outputs):
  """Log class probabilities from logits [B, K], or from ensemble logits [B, M, K].

  An ensemble's prediction is its members' softmax averaged over M (the vote distill uses), so
  its log-probability is logsumexp over members of log-softmax, minus log M.
  """
  outputs = np.asarray(outputs, np.float64)
  shifted = outputs - outputs.max(axis=-1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
  if log_softmax.ndim == 3:
    peak = log_softmax.max(axis=1, keepdims=True)
    log_softmax = (peak + np.log(np.exp(log_softmax - peak).mean(axis=1, keepdims=True)))[:, 0]
  if log_softmax.ndim != 2:
    raise ValueError(f"expected outputs of shape [B, K] or [B, M, K], got {outputs.shape}")
  return log_softmax


def cross_entropy(outputs, labels):
  """Per-record loss of the true label, and the per-record predicted class."""
  log_probs = log_probabilities(outputs)
  labels = np.asarray(labels, np.int64)
  return -log_probs[np.arange(len(labels)), labels], np.argmax(log_probs, axis=-1)


def model_outputs(model, images, batch_size=500):
  outputs = [np.asarray(model(tf.constant(images[start:start + batch_size]), training=False))
             for start in range(0, len(images), batch_size)]
  return np.concatenate(outputs)


# ---------------------------------------------------------------------------------------------
# Targets.


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _epsilon_value(epsilon):
  """A report's epsilon as a float (inf when not private) for arithmetic."""
  return math.inf if epsilon in (None, "inf") else float(epsilon)


def find_targets(runs):
  """The audited models under ``runs`` that exist, in table order; missing ones are skipped.

  A teacher counts once its teacher.json is written (train_teacher writes it after the model), so
  a run still training is not audited half-saved.
  """
  targets = []
  ensembles = sorted(name for name in _listdir(runs) if name.startswith("ensemble")
                     and os.path.isfile(os.path.join(runs, name, "teacher.json")))
  for name in ["teacher"] + ensembles + ["dpsgd_eps1", "dpsgd_eps10"]:
    model = os.path.join(runs, name, "model")
    marker = os.path.join(runs, name, "teacher.json")
    if not (os.path.isfile(os.path.join(model, "saved_model.pb")) and os.path.isfile(marker)):
      continue
    record = _read_json(marker)
    if record.get("num_teachers", 1) > 1:
      kind = f"teacher ensemble (M = {record['num_teachers']}, averaged softmax)"
    elif record.get("private"):
      kind = "DP-SGD classifier"
    else:
      kind = "teacher (non-private)"
    privacy = record.get("privacy") or {}
    targets.append({"name": name, "kind": kind, "path": model,
                    "epsilon": privacy.get("epsilon", "inf") if record.get("private") else "inf",
                    "delta": privacy.get("delta")})
  for name in sorted(_listdir(runs)):
    student = os.path.join(runs, name, "student")
    report_path = os.path.join(runs, name, "privacy_report.json")
    if not (os.path.isfile(os.path.join(student, "saved_model.pb"))
            and os.path.isfile(report_path)):
      continue
    report = _read_json(report_path)
    teacher = os.path.basename(os.path.dirname(os.path.normpath(report.get("teacher", ""))))
    kind = (f"student distilled from {teacher or 'a teacher'} "
            f"({report.get('generator_mode', '?')} generator)")
    targets.append({"name": name, "kind": kind, "path": student,
                    "epsilon": report.get("epsilon", "inf"), "delta": report.get("delta"),
                    "status": report.get("status")})
  return targets


def _listdir(path):
  return [name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))] if (
      os.path.isdir(path)) else []


# ---------------------------------------------------------------------------------------------
# Samples and the reference model.


def audit_samples(sample_size, member_records=None):
  """(member images, labels, non-member images, labels, reference images, labels).

  Members are drawn from the first ``member_records`` training records (None: all), the ones
  the teachers trained on (benchmarks/run.py, Mode.train_records). One seeded permutation per
  split, the first ``sample_size`` records audited: the quick mode's non-members lie inside the
  full mode's, so one cached reference serves both.
  """
  train_images, train_labels = data.load(DATASET, "train")
  test_images, test_labels = data.load(DATASET, "test")
  member_order = np.random.default_rng(SAMPLE_SEED).permutation(
      member_records or len(train_images))
  test_order = np.random.default_rng(SAMPLE_SEED + 1).permutation(len(test_images))
  members = member_order[:sample_size]
  non_members = test_order[:sample_size]
  # The reference model stands for what an attacker can train without the private data, so it
  # must come from the population, not from the private training set: every train record is in
  # that set (the validation records are private too, and the teachers' shards cover the rest).
  # The test split is the population data we have. It must also exclude the audited non-members
  # (always the full SAMPLE_SIZE, also in quick mode): a reference trained on them would give
  # them low reference losses, push their calibrated scores down and inflate the attack.
  reference = test_order[SAMPLE_SIZE:]
  return (train_images[members], train_labels[members], test_images[non_members],
          test_labels[non_members], test_images[reference], test_labels[reference])


def reference_model(runs, images, labels):
  """The calibrated attack's reference classifier, trained once and cached under runs.

  Returns (model, record of how it was made, whether it was reused).
  """
  directory = os.path.join(runs, REFERENCE_DIR)
  model_path = os.path.join(directory, "model")
  marker = os.path.join(directory, REFERENCE_MARKER)
  if os.path.isfile(marker):
    record = _read_json(marker)
    if {key: record.get(key) for key in REFERENCE_CONFIG} == REFERENCE_CONFIG:
      return teachers.load_classifier(model_path, IMAGE_SHAPE, NUM_CLASSES, "logits",
                                      name="reference"), record, True
  print(f"audit: training the reference model on {len(images)} held-out test records",
        flush=True)
  model = architectures.build_classifier(REFERENCE_CONFIG["architecture"], IMAGE_SHAPE,
                                         NUM_CLASSES, width=REFERENCE_CONFIG["width"],
                                         name="reference")
  start = time.time()
  classification.train_classifier(model, images, labels, epochs=REFERENCE_CONFIG["epochs"],
                                  batch_size=REFERENCE_CONFIG["batch_size"],
                                  seed=REFERENCE_CONFIG["seed"], verbose=0)
  os.makedirs(directory, exist_ok=True)
  if os.path.exists(marker):
    os.remove(marker)  # the marker is written last: a half-written cache is never reused
  model.save(model_path, include_optimizer=False)
  record = dict(REFERENCE_CONFIG, training_records=len(images), dataset=DATASET,
                training_data="test split minus the audited non-member sample",
                train_seconds=round(time.time() - start, 1))
  with open(marker, "w") as f:
    json.dump(record, f, indent=2)
  return model, record, False


# ---------------------------------------------------------------------------------------------
# The section.


def audit_section(runs: str, quick: bool = False, member_records: int = None) -> dict:
  """Runs the audit on every model found under ``runs``; returns a JSON-serializable result.

  Writes the loss attack's ROC plot to benchmarks/results/mia_roc.png (mia_roc_quick.png in
  quick mode, which audits 1,000 members and 1,000 non-members instead of 5,000 each).
  Members come from the first ``member_records`` training records (None: all of them).
  """
  start = time.time()
  sample_size = QUICK_SAMPLE_SIZE if quick else SAMPLE_SIZE
  (member_images, member_labels, non_member_images, non_member_labels, reference_images,
   reference_labels) = audit_samples(sample_size, member_records)
  reference, reference_record, reused = reference_model(runs, reference_images, reference_labels)
  reference_member_loss, reference_member_classes = cross_entropy(
      model_outputs(reference, member_images), member_labels)
  reference_non_member_loss, reference_non_member_classes = cross_entropy(
      model_outputs(reference, non_member_images), non_member_labels)
  reference_summary = dict(reference_record, reused=reused,
                           path=os.path.join(runs, REFERENCE_DIR),
                           member_accuracy=float(np.mean(reference_member_classes
                                                         == member_labels)),
                           non_member_accuracy=float(np.mean(reference_non_member_classes
                                                             == non_member_labels)))
  rows, curves = [], []
  for target in find_targets(runs):
    print(f"audit: {target['name']}", flush=True)
    model = teachers.load_classifier(target["path"], IMAGE_SHAPE, NUM_CLASSES,
                                     name=target["name"])
    member_loss, member_classes = cross_entropy(model_outputs(model, member_images),
                                                member_labels)
    non_member_loss, non_member_classes = cross_entropy(model_outputs(model, non_member_images),
                                                        non_member_labels)
    del model
    keras.backend.clear_session()  # ten-odd models in one process: free the graphs
    attacks = {}
    for attack, member_scores, non_member_scores in (
        ("loss", -member_loss, -non_member_loss),
        ("calibrated", reference_member_loss - member_loss,
         reference_non_member_loss - non_member_loss)):
      attacks[attack] = dict(attack_metrics(member_scores, non_member_scores),
                             ci=bootstrap_intervals(member_scores, non_member_scores))
    fpr, tpr, _ = roc_curve(-member_loss, -non_member_loss)
    curves.append((target, fpr, tpr, attacks["loss"]["auc"]))
    epsilon = target["epsilon"]
    rows.append(dict(target, member_accuracy=float(np.mean(member_classes == member_labels)),
                     non_member_accuracy=float(np.mean(non_member_classes == non_member_labels)),
                     mean_member_loss=float(member_loss.mean()),
                     mean_non_member_loss=float(non_member_loss.mean()),
                     dp_tpr_limit=dp_tpr_limit(_epsilon_value(epsilon), target["delta"] or 0.0),
                     **attacks))
  plot = QUICK_ROC_PLOT if quick else ROC_PLOT
  if curves:
    plot_roc(curves, os.path.join(REPO, plot), sample_size)
  return {"dataset": DATASET, "quick": quick, "members": sample_size,
          "member_records": member_records,
          "non_members": sample_size, "sample_seed": SAMPLE_SEED, "fpr_target": FPR_TARGET,
          "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "confidence": CONFIDENCE,
          "reference": reference_summary, "audited": [row["name"] for row in rows],
          "rows": rows, "roc_plot": plot if curves else None,
          "command": COMMAND.replace(" --only", " --quick --only") if quick else COMMAND,
          "seconds": round(time.time() - start, 1)}


def _target_label(target):
  epsilon = _epsilon_value(target["epsilon"])
  return f"{target['name']} (eps {accounting.format_epsilon(epsilon)})"


def plot_roc(curves, path, sample_size):
  """The loss attack's ROC curves: linear axes (the AUC) and log-log axes (low FPR)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, (linear, logarithmic) = plt.subplots(1, 2, figsize=(13, 6))
  colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(curves), 2)))
  floor = 1.0 / sample_size  # the smallest non-zero FPR (and TPR) the sample can show
  for (target, fpr, tpr, auc), color in zip(curves, colors):
    style = "-" if target["kind"].startswith(("teacher", "DP-SGD")) else "--"
    label = f"{_target_label(target)}: AUC {auc:.3f}"
    linear.plot(fpr, tpr, style, color=color, label=label, linewidth=1.4)
    logarithmic.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), style, color=color,
                     linewidth=1.4)
  for axes in (linear, logarithmic):
    axes.plot([floor, 1], [floor, 1], ":", color="gray", label="chance" if axes is linear else None)
    axes.set_xlabel("false positive rate (non-members flagged)")
    axes.set_ylabel("true positive rate (members flagged)")
    axes.grid(alpha=0.3)
  linear.set_xlim(0, 1)
  linear.set_ylim(0, 1)
  linear.set_title("loss attack, linear axes")
  logarithmic.set_xscale("log")
  logarithmic.set_yscale("log")
  logarithmic.set_xlim(floor, 1)
  logarithmic.set_ylim(floor, 1)
  logarithmic.axvline(FPR_TARGET, color="gray", linewidth=0.8)
  logarithmic.set_title("loss attack, log-log axes (low FPR)")
  figure.legend(*linear.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
                frameon=False)
  figure.suptitle(f"Membership inference on Fashion-MNIST: {sample_size:,} members vs "
                  f"{sample_size:,} non-members")
  legend_rows = math.ceil((len(curves) + 1) / 3)
  figure.tight_layout(rect=(0, 0.03 + 0.03 * legend_rows, 1, 1))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Markdown.


def _interval(value, interval, percent=False):
  if percent:
    return f"{100 * value:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
  return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _above_chance(attack, fpr_target):
  """Whether a 95% interval lies above what a coin flip gets (AUC 0.5, TPR = FPR)."""
  return attack["ci"]["auc"][0] > 0.5 or attack["ci"]["tpr_at_fpr"][0] > fpr_target


def _below_chance(attack):
  return attack["ci"]["auc"][1] < 0.5


def _strongest_attack(row):
  """The attack with the higher AUC on this row: 'loss' or 'calibrated'."""
  return max(("loss", "calibrated"), key=lambda attack: row[attack]["auc"])


def markdown_lines(result: dict) -> list:
  """The BENCHMARKS.md section for an ``audit_section`` result."""
  fpr_percent = f"{100 * result['fpr_target']:g}%"
  lines = ["## Membership inference audit", ""]
  if result.get("machine"):
    lines += [f"Machine: {result['machine']}; measured {result.get('date', '')}.", ""]
  reference = result["reference"]
  quick = " (quick mode)" if result["quick"] else ""
  lines += [
      f"Fashion-MNIST, {result['members']:,} members (a seeded sample of the "
      + (f"first {result['member_records']:,} " if result.get("member_records") else "")
      + "train records, the teachers' training data) against "
      f"{result['non_members']:,} non-members (test records){quick}. "
      "Loss attack: a record is called a member when the model's cross-entropy on its true label "
      "is low. Calibrated attack: the same after subtracting the loss of a reference model "
      f"({reference['architecture']}, width {reference['width']}, {reference['epochs']} epochs) "
      f"trained on {reference['training_records']:,} other test records, which never saw an "
      f"audited record. Intervals: {100 * result.get('confidence', CONFIDENCE):g}% bootstrap, "
      f"{result['bootstrap_resamples']} resamples. Accuracy is on the audited samples.", "",
      f"| model | epsilon | members / non-members accuracy | loss attack AUC | loss attack TPR "
      f"@ {fpr_percent} FPR | calibrated AUC | calibrated TPR @ {fpr_percent} FPR | DP limit on "
      f"TPR @ {fpr_percent} FPR |",
      "|---|---|---|---|---|---|---|---|"]
  for row in result["rows"]:
    epsilon = _epsilon_value(row["epsilon"])
    limit = row.get("dp_tpr_limit")
    lines.append(
        f"| {row['name']}: {row['kind']} | {accounting.format_epsilon(epsilon)} | "
        f"{100 * row['member_accuracy']:.1f}% / {100 * row['non_member_accuracy']:.1f}% | "
        f"{_interval(row['loss']['auc'], row['loss']['ci']['auc'])} | "
        f"{_interval(row['loss']['tpr_at_fpr'], row['loss']['ci']['tpr_at_fpr'], True)} | "
        f"{_interval(row['calibrated']['auc'], row['calibrated']['ci']['auc'])} | "
        f"{_interval(row['calibrated']['tpr_at_fpr'], row['calibrated']['ci']['tpr_at_fpr'], True)}"
        f" | {'none' if limit is None else f'{100 * limit:.1f}%'} |")
  if not result["rows"]:
    lines.append("| (no model found under the runs directory) | | | | | | | |")
  lines.append("")
  if result.get("roc_plot"):
    lines += [f"![membership inference ROC curves]({result['roc_plot']})", ""]
  lines += _reading(result) + ["", f"Command: `{result['command']}`", ""]
  return lines


def _reading(result):
  """A few sentences drawn from the numbers: what leaks, what does not, what DP promises."""
  fpr_target = result["fpr_target"]
  fpr_percent = f"{100 * fpr_target:g}%"
  text = [f"Reading: guessing at random gives AUC 0.5 and a TPR of {fpr_percent} at "
          f"{fpr_percent} FPR; anything above is membership leaking through the model's "
          "answers."]
  rows = result["rows"]
  attacks = ("loss", "calibrated")
  if rows:
    leaking = [row for row in rows
               if any(_above_chance(row[attack], fpr_target) for attack in attacks)]
    if leaking:
      described = []
      for row in leaking:
        attack = _strongest_attack(row)
        described.append(
            f"{row['name']} ({attack} attack: AUC {row[attack]['auc']:.3f}, "
            f"{100 * row[attack]['tpr_at_fpr']:.1f}% of members found at {fpr_percent} FPR)")
      text.append("Measurable leakage (a 95% interval above chance): "
                  f"{'; '.join(described)}.")
    else:
      top = max(rows, key=lambda row: row[_strongest_attack(row)]["auc"])
      text.append(
          "No audited model leaks measurably: every interval, for AUC and for TPR at "
          f"{fpr_percent} FPR, reaches down to chance (the highest AUC, "
          f"{top[_strongest_attack(top)]['auc']:.3f} for {top['name']}, is within "
          "sampling noise). This is evidence, not proof: a stronger attack may do better, and "
          "only epsilon bounds every attack.")
    gap = max(rows, key=lambda row: row["member_accuracy"] - row["non_member_accuracy"])
    text.append(
        "The loss attack feeds on overfitting, the gap between accuracy on members and on "
        f"non-members; the largest gap here is {gap['name']}'s, "
        f"{100 * (gap['member_accuracy'] - gap['non_member_accuracy']):.1f} points.")
    below = [row["name"] for row in rows if any(_below_chance(row[attack]) for attack in attacks)]
    if below:
      text.append(
          f"An AUC interval below 0.5 ({', '.join(below)}) means the audited members happened "
          "to be harder for that model than the non-members: sample noise, not leakage.")
    text.append(
        f"With {4 * len(rows)} intervals in the table, a few miss chance by luck alone.")
    bounded = [row for row in rows if row.get("dp_tpr_limit") is not None]
    if bounded:
      over = [row["name"] for row in bounded
              if max(row[attack]["ci"]["tpr_at_fpr"][0] for attack in attacks)
              > row["dp_tpr_limit"]]
      text.append(
          "The last column is what the privacy guarantee allows any attack: at most "
          f"e^epsilon x {fpr_percent} + delta of members found at {fpr_percent} FPR (100% means "
          "the bound says nothing at that epsilon). "
          + (f"Measured above it for {', '.join(over)}: that privacy claim is contradicted."
             if over else "Every private model's measured TPR stays under its limit."))
  text.append("The members are records the teachers trained on and the non-members test "
              "records, fixed rather than randomized per model, so these are estimates of "
              "leakage, not a formal test of the guarantee.")
  return [" ".join(text)]
