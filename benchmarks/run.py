r"""Measures what BENCHMARKS.md reports and rewrites it: every number next to the command
that produced it.

  python -m benchmarks.run                 # all sections, 74 minutes from scratch on 2 CPU cores
  python -m benchmarks.run --only=speed    # one section
  python -m benchmarks.run --only=markdown # rewrite BENCHMARKS.md and the plot from results.json
  python -m benchmarks.run --quick         # every section in miniature, under 10 minutes
  bash benchmarks/gpu_check.sh             # speed_gpu: the same on a GPU, when there is one

Sections: accuracy (Fashion-MNIST teacher; non-private DAFL, DFAD and teacher-free students; the
private students at epsilon 1, 10 (the main job), 100 and 1000), privacy (ensemble-unit DPDFD
against DP-SGD on the real data), downstream (a classifier trained only on a DP generator's
samples), speed (benchmarks.step_time), audit (benchmarks.audit) and, only when asked for,
speed_gpu (step time on a GPU).

The test split never chooses anything. The teachers train on the first 55,000 training records;
the last 5,000 are a validation split (an .npz passed with --data_dir). Where a row compares
several configurations (a ``Choice``), every one is run and evaluated on the validation split,
and only the best is evaluated on the test split and reported.

Runs go to --runs_dir (reused when a finished run is already there, so an interrupted benchmark
continues); results accumulate in benchmarks/results/results.json, from which BENCHMARKS.md and
benchmarks/results/*.png are drawn.

--quick shortens every run (a 10,000-record training subset for the teachers, a few hundred
private steps at batch 64, a few timed steps) and keeps everything apart from the full-mode
results: runs in benchmarks/runs_quick, results in benchmarks/results/quick/, markdown in
BENCHMARKS_quick.md. It then redraws BENCHMARKS.md from the full-mode results (unchanged).
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
import time
import traceback
from typing import Optional, Tuple

from absl import app
from absl import flags

from benchmarks import common
from benchmarks.common import run
from dpdfd_tf import accounting
from dpdfd_tf import data

QUICK = flags.DEFINE_bool(
    "quick", False, "Every section in miniature (under 10 minutes on 2 CPU cores); runs, results "
    "and markdown apart from the full mode's (benchmarks/runs_quick, benchmarks/results/quick, "
    "BENCHMARKS_quick.md).")
RUNS_DIR = flags.DEFINE_string("runs_dir", None, "Where the runs are written (default "
                               "benchmarks/runs, or benchmarks/runs_quick with --quick).")
ONLY = flags.DEFINE_list("only", [], "Sections to run (accuracy, privacy, downstream, speed, "
                         "audit, speed_gpu); default all but speed_gpu. 'markdown' only "
                         "rewrites the markdown and plots from the stored results.")
PRESET = "--flagfile=flags/fashion_mnist.cfg"
DEFAULT_SECTIONS = ("accuracy", "privacy", "downstream", "speed", "audit")
TRAIN_SPLIT_RECORDS = 60000  # Fashion-MNIST's training split
DP_SGD_FLAGS = ("--teacher_width=16", "--epochs=4", "--teacher_batch_size=256")


@dataclasses.dataclass(frozen=True)
class Mode:
  """Where a mode keeps its files and how it shortens the runs (flags appended to the preset).

  ``*_runs`` name the distillation runs a mode keeps from each section (None: all of them).
  """
  name: str
  runs_dir: str
  results_dir: str
  markdown: str
  train_records: int  # teachers train on the first records of the training split
  validation_records: int  # the last records of the training split: the validation split
  teacher_flags: Tuple[str, ...]
  distill_flags: Tuple[str, ...]
  accuracy_runs: Optional[Tuple[str, ...]]
  ensemble_size: int
  ensemble_flags: Tuple[str, ...]
  dp_sgd_epsilons: Tuple[int, ...]
  dp_sgd_flags: Tuple[str, ...]
  privacy_runs: Optional[Tuple[str, ...]]
  downstream_samples: int
  downstream_epochs: int
  speed_flags: Tuple[str, ...]

  @property
  def quick(self):
    return self.name == "quick"

  @property
  def results(self):
    return os.path.join(self.results_dir, "results.json")

  def result_file(self, name):
    return os.path.join(self.results_dir, name)


FULL = Mode(
    name="full", runs_dir="benchmarks/runs", results_dir="benchmarks/results",
    markdown="BENCHMARKS.md", train_records=55000, validation_records=5000, teacher_flags=(),
    distill_flags=(),
    accuracy_runs=None, ensemble_size=250, ensemble_flags=(), dp_sgd_epsilons=(1, 10),
    dp_sgd_flags=DP_SGD_FLAGS, privacy_runs=None, downstream_samples=60000,
    downstream_epochs=5,
    speed_flags=("--batch_size=256", "--steps=40", "--mechanism_steps=5",
                 "--scaling_batch_sizes=64,256,1024", "--scaling_steps=20"))
QUICK_MODE = Mode(
    name="quick", runs_dir="benchmarks/runs_quick", results_dir="benchmarks/results/quick",
    markdown="BENCHMARKS_quick.md", train_records=10000, validation_records=2000,
    teacher_flags=("--epochs=2",),
    distill_flags=("--steps=200", "--batch_size=64", "--generator_warmup_steps=50",
                   "--steps_per_epoch=50", "--log_every=50", "--sample_every=100",
                   "--checkpoint_every=100"),
    accuracy_runs=("student_sigma0", "student_eps10", "student_eps1000"), ensemble_size=10,
    ensemble_flags=("--ensemble_epochs=10",), dp_sgd_epsilons=(10,),
    dp_sgd_flags=("--teacher_width=16", "--epochs=1", "--teacher_batch_size=256"),
    privacy_runs=("ensemble_eps10",), downstream_samples=5000, downstream_epochs=2,
    speed_flags=("--batch_size=64", "--steps=3", "--mechanism_steps=2",
                 "--scaling_batch_sizes=64,256,1024", "--scaling_steps=2"))


@dataclasses.dataclass
class Context:
  """What a section needs: the mode, the runs directory and the results measured so far."""
  mode: Mode
  runs: str
  results: dict
  reused: int = 0  # finished runs found in runs and not run again

  def run_unless(self, marker, command):
    """Runs ``command`` unless ``marker`` (the file its run writes last) exists."""
    if os.path.exists(marker):
      self.reused += 1
    else:
      run(command)

  def data_path(self):
    """The .npz the teachers train on and the tuning evaluates on (written on first use)."""
    mode = self.mode
    path = os.path.join(self.runs, f"fashion_mnist_train{mode.train_records}_validation"
                                   f"{mode.validation_records}.npz")
    if not os.path.exists(path):
      write_splits(path, mode.train_records, mode.validation_records)
    return path

  def data_flags(self):
    return [f"--data_dir={self.data_path()}"]


def write_splits(path, train_records, validation_records):
  """Fashion-MNIST as train = the first ``train_records`` training records, validation = the
  last ``validation_records`` (disjoint from train), test = the whole test split."""
  if train_records + validation_records > TRAIN_SPLIT_RECORDS:
    raise ValueError(f"{train_records} + {validation_records} records overlap: the training "
                     f"split has {TRAIN_SPLIT_RECORDS}")
  train_images, train_labels = data.load("fashion_mnist", "train")
  data.save_npz(path, train=(train_images[:train_records], train_labels[:train_records]),
                validation=(train_images[-validation_records:],
                            train_labels[-validation_records:]),
                test=data.load("fashion_mnist", "test"))


def python_command(*args):
  return ["python", "-m", *args]


def accuracy(output, split="test"):
  return float(re.findall(split + r" accuracy: ([0-9.]+)", output)[-1])


def read_report(run_dir):
  with open(os.path.join(run_dir, "privacy_report.json")) as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One distillation configuration: its run directory's name and the flags it adds."""
  name: str
  label: str  # what sets it apart within its Choice ('' for a fixed configuration)
  flags: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Choice:
  """Configurations compared on the validation split: every one is run and evaluated there,
  and only the most accurate (the first on ties) is evaluated on the test split. One candidate
  is a fixed configuration."""
  title: str
  candidates: Tuple[Candidate, ...]
  grid: str = ""  # what varies, for the tuning table

  @classmethod
  def fixed(cls, title, name, *flags_):
    return cls(title, (Candidate(name, "", tuple(flags_)),))


def evaluate_command(ctx, model, split):
  command = ["--dataset=fashion_mnist", f"--model={model}"]
  if split != "test":  # the test split is read from its usual source, the others from the .npz
    command += [f"--data_dir={ctx.data_path()}", f"--split={split}"]
  return python_command("dpdfd_tf.evaluate", *command)


def distilled(ctx, candidate, teacher):
  """Distills ``candidate`` unless already finished and evaluates it on the validation split;
  returns (validation accuracy, privacy report, commands)."""
  out = os.path.join(ctx.runs, candidate.name)
  distill = python_command("dpdfd_tf.distill", PRESET, f"--teacher={teacher}",
                           *ctx.mode.distill_flags, *candidate.flags, f"--output_dir={out}")
  ctx.run_unless(os.path.join(out, "privacy_report.json"), distill)
  evaluate = evaluate_command(ctx, f"{out}/student", "validation")
  value = accuracy(run(evaluate), "validation")
  return value, read_report(out), [" ".join(distill), " ".join(evaluate)]


def chosen_row(ctx, choice, teacher, keep=None):
  """The row of ``choice``'s best candidate on the validation split, with its test accuracy;
  None when ``keep`` (run names; None: all) keeps none of its candidates."""
  tried = []
  for candidate in choice.candidates:
    if kept(keep, candidate.name):
      tried.append((candidate, *distilled(ctx, candidate, teacher)))
  if not tried:
    return None
  best, validation, report, commands = max(tried, key=lambda entry: entry[1])  # first on ties
  test = evaluate_command(ctx, f"{os.path.join(ctx.runs, best.name)}/student", "test")
  grid = ctx.mode.result_file(f"samples_{best.name}.png")
  shutil.copyfile(os.path.join(ctx.runs, best.name, "samples.png"), grid)
  row = {"name": choice.title + (f", {best.label}" if best.label else ""), "run": best.name,
         "accuracy": accuracy(run(test)), "validation_accuracy": validation,
         "epsilon": report["epsilon"], "noise_multiplier": report["noise_multiplier"],
         "unit": report["unit"], "steps": report["private_steps"],
         "commands": commands + [" ".join(test)], "grid": grid, "flags": list(best.flags)}
  if len(tried) > 1:
    row["tuning"] = {"grid": choice.grid, "candidates": [
        {"run": candidate.name, "label": candidate.label, "validation_accuracy": value,
         "epsilon": candidate_report["epsilon"], "command": candidate_commands[0]}
        for candidate, value, candidate_report, candidate_commands in tried]}
  return row


def trained_teacher(ctx, name, *flags_):
  """Trains (unless finished) a teacher; returns (model path, teacher.json, command)."""
  out = os.path.join(ctx.runs, name)
  command = python_command("dpdfd_tf.train_teacher", PRESET, *ctx.data_flags(), *flags_,
                           f"--output_dir={out}")
  ctx.run_unless(os.path.join(out, "teacher.json"), command)
  with open(os.path.join(out, "teacher.json")) as f:
    return os.path.join(out, "model"), json.load(f), " ".join(command)


def subset_note(ctx):
  records = ctx.mode.train_records
  return f", first {records:,} training records" if records else ""


def epochs_text(record):
  return f"{record['epochs']} epoch{'' if record['epochs'] == 1 else 's'}"


def kept(names, name):
  return names is None or name in names


def dfad_candidate(loss, mixup):
  return Candidate(f"dfad_{loss}{'' if mixup else '_nomix'}_sigma0",
                   f"{loss.upper()} distillation, input mixup {'on' if mixup else 'off'}",
                   ("--generator_mode=adversarial", "--noise_multiplier=0",
                    "--student_steps_per_iteration=5", f"--distillation_loss={loss}",
                    *(() if mixup else ("--noinput_mixup",))))


ACCURACY_CHOICES = [
    Choice.fixed("non-private, teacher as discriminator (DAFL), 1,000 steps", "dafl_sigma0",
                 "--generator_mode=teacher", "--noise_multiplier=0"),
    Choice("non-private, teacher-student discrepancy (DFAD), 1,000 steps, 5 student : 1 "
           "generator", tuple(dfad_candidate(loss, mixup) for loss in ("kl", "l1")
                              for mixup in (True, False)),
           grid="distillation loss {KL, L1} x input mixup {on, off}"),
    Choice.fixed("private mode with noise switched off (sigma = 0), default teacher-free "
                 "generator, 1,000 steps", "student_sigma0", "--noise_multiplier=0"),
    Choice.fixed("private: the main job, epsilon = 10, default teacher-free generator, 1,000 "
                 "steps", "student_eps10", "--epsilon=10"),
] + [Choice.fixed(f"private: epsilon = {epsilon}, default teacher-free generator, 1,000 steps",
                  f"student_eps{epsilon}", f"--epsilon={epsilon}") for epsilon in (1, 100, 1000)]


def teacher_row(ctx):
  """The single teacher's row and its model path."""
  teacher, record, train = trained_teacher(ctx, "teacher", *ctx.mode.teacher_flags)
  evaluate = evaluate_command(ctx, teacher, "test")
  return teacher, {"name": f"teacher (small CNN, {epochs_text(record)}{subset_note(ctx)}, "
                           "non-private)", "run": "teacher",
                   "accuracy": accuracy(run(evaluate)), "epsilon": "inf (not private)",
                   "commands": [train, " ".join(evaluate)]}


def accuracy_section(ctx):
  teacher, row = teacher_row(ctx)
  rows = [row]
  for choice in ACCURACY_CHOICES:
    row = chosen_row(ctx, choice, teacher, ctx.mode.accuracy_runs)
    if row is not None:
      rows.append(row)
  return rows


ENSEMBLE_SIGMA0 = Choice.fixed("DPDFD, ensemble, sigma = 0 (not private: the ceiling), 1,000 "
                               "steps", "ensemble_sigma0", "--noise_multiplier=0")
ENSEMBLE_EPSILON10 = Choice(
    "DPDFD, ensemble unit, epsilon 10",
    (Candidate("ensemble_eps10_400", "400 steps", ("--epsilon=10", "--steps=400")),
     Candidate("ensemble_eps10", "1,000 steps", ("--epsilon=10",))),
    grid="private steps {400, 1,000} (sigma calibrated to epsilon 10 for each)")


def at_epsilon_1(candidate):
  """The configuration chosen at epsilon 10, run at epsilon 1 (not tuned again)."""
  return Choice.fixed(
      "DPDFD, ensemble unit, epsilon 1, the configuration chosen at epsilon 10"
      + (f" ({candidate.label})" if candidate.label else ""),
      candidate.name.replace("eps10", "eps1", 1),
      *(flag.replace("--epsilon=10", "--epsilon=1") for flag in candidate.flags))


def privacy_section(ctx):
  """Ensemble-unit DPDFD students at epsilon 1 and 10 next to DP-SGD on the real data."""
  mode = ctx.mode
  ensemble, record, command = trained_teacher(
      ctx, f"ensemble{mode.ensemble_size}", f"--num_teachers={mode.ensemble_size}",
      *mode.ensemble_flags)
  rows = [{"name": f"teacher ensemble, M = {mode.ensemble_size} on disjoint shards of "
                   f"{record['records_per_teacher']} records (averaged vote; one member: "
                   f"{100 * record['member_test_accuracy']['mean']:.1f}% on average)",
           "run": f"ensemble{mode.ensemble_size}", "accuracy": record["test_accuracy"],
           "epsilon": "inf (not private)", "commands": [command]}]
  for epsilon in mode.dp_sgd_epsilons:
    _, record, command = trained_teacher(ctx, f"dpsgd_eps{epsilon}", f"--dp_epsilon={epsilon}",
                                         *mode.dp_sgd_flags)
    rows.append({"name": f"DP-SGD classifier on the real data (tensorflow-privacy DPModel, "
                         f"Poisson sampling, {epochs_text(record)}{subset_note(ctx)}), "
                         f"epsilon {epsilon}", "run": f"dpsgd_eps{epsilon}",
                 "accuracy": record["test_accuracy"], "epsilon": record["privacy"]["epsilon"],
                 "noise_multiplier": record["privacy"]["noise_multiplier"], "unit": "dp_sgd",
                 "steps": record["privacy"]["private_steps"], "commands": [command]})
  choices = [ENSEMBLE_SIGMA0, ENSEMBLE_EPSILON10]
  for choice in choices:
    row = chosen_row(ctx, choice, ensemble, mode.privacy_runs)
    if row is None:
      continue
    rows.append(row)
    if choice is ENSEMBLE_EPSILON10:
      chosen = next(c for c in choice.candidates if c.name == row["run"])
      choices.append(at_epsilon_1(chosen))
  return rows


def row_run(row):
  """The run directory's name of a results row (older rows: from their --output_dir)."""
  if "run" in row:
    return row["run"]
  match = re.search(r"--output_dir=(\S+)", " ".join(row.get("commands", [])[:1]))
  return os.path.basename(match.group(1).rstrip("/")) if match else None


def is_finite(value):
  return isinstance(value, (int, float)) and math.isfinite(value)


def best_ensemble_row(results):
  """The most accurate private ensemble-unit DPDFD row of the privacy section, or None."""
  rows = [row for row in (results.get("privacy") or {}).get("rows", [])
          if row.get("unit") == "teacher_ensemble" and is_finite(row.get("epsilon"))]
  return max(rows, key=lambda row: row["accuracy"], default=None)


def downstream_section(ctx):
  """A classifier trained only on a DP generator's samples, labelled by the DP student."""
  sources = [("student_eps10", "DPDFD, teacher unit, epsilon 10 (the main job)")]
  best = best_ensemble_row(ctx.results)
  if best is not None:
    sources.append((row_run(best), f"{best['name']} (the most accurate ensemble-unit student)"))
  rows = []
  for name, title in sources:
    run_dir = os.path.join(ctx.runs, name)
    if not os.path.exists(os.path.join(run_dir, "privacy_report.json")):
      raise RuntimeError(f"{run_dir} holds no finished run: run the accuracy (and privacy) "
                         "sections first")
    samples = os.path.join(ctx.runs, "downstream", f"{name}.npz")
    generate = python_command("dpdfd_tf.generate", f"--generator={run_dir}/generator",
                              f"--num_samples={ctx.mode.downstream_samples}",
                              f"--output={samples}")
    if os.path.exists(samples) and (os.path.getmtime(samples) <
                                    os.path.getmtime(os.path.join(run_dir, "privacy_report.json"))):
      os.remove(samples)  # drawn from an earlier run of that directory
    ctx.run_unless(samples, generate)
    train = python_command("benchmarks.downstream", f"--train={samples}",
                           f"--epochs={ctx.mode.downstream_epochs}", "--width=16")
    report = read_report(run_dir)
    rows.append({"name": title, "run": name, "accuracy": accuracy(run(train)),
                 "epsilon": report["epsilon"], "unit": report["unit"],
                 "samples": ctx.mode.downstream_samples, "epochs": ctx.mode.downstream_epochs,
                 "commands": [" ".join(generate), " ".join(train)]})
  return rows


def speed_section(ctx, output=None, *extra):
  """benchmarks.step_time; an ``output`` of its own keeps the CPU figures apart (speed_gpu)."""
  output = output or ctx.mode.result_file("step_time.json")
  command = python_command("benchmarks.step_time", *ctx.mode.speed_flags, *extra,
                           f"--output={output}")
  run(command)
  with open(output) as f:
    result = json.load(f)
  result["command"] = " ".join(command)
  return result


def gpu_speed_section(ctx):
  # Host memory against batch size says nothing about a GPU: no scaling children there.
  result = speed_section(ctx, ctx.mode.result_file("step_time_gpu.json"),
                         "--scaling_batch_sizes=")
  if result["device"] == "no GPU":  # CPU figures must not be recorded as a GPU's
    raise RuntimeError("TensorFlow sees no GPU (BUILD.md, GPU); nothing recorded")
  return result


def import_audit():
  try:
    from benchmarks import audit  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise RuntimeError("section 'audit' needs benchmarks/audit.py with audit_section(runs, "
                       "quick) and markdown_lines(result); importing it failed: "
                       f"{error}") from error
  return audit


def audit_section(ctx):
  return import_audit().audit_section(ctx.runs, quick=ctx.mode.quick,
                                      member_records=ctx.mode.train_records)


SECTIONS = {"accuracy": accuracy_section, "privacy": privacy_section,
            "downstream": downstream_section, "speed": speed_section, "audit": audit_section,
            "speed_gpu": gpu_speed_section}


def machine():
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}, {platform.system()}")


# ---- markdown ------------------------------------------------------------------------------------


def epsilon_text(epsilon):
  return accounting.format_epsilon(epsilon) if isinstance(epsilon, float) else epsilon


def sigma_text(row):
  sigma = row.get("noise_multiplier")
  return "" if sigma is None else f"{sigma:.4g}"


def validation_text(row):
  value = row.get("validation_accuracy")
  return "" if value is None else f"{100 * value:.1f}%"


def command_block(rows):
  lines = ["Commands:", "", "```"]
  for row in rows:
    lines += row["commands"]
  return lines + ["```", ""]


def grid_lines(mode, rows):
  """The sample grids (full mode only: quick-mode grids stay out of the repository)."""
  if mode.quick:
    return []
  lines = []
  for row in rows:
    if row.get("grid") and os.path.exists(row["grid"]):
      lines += [f"**{row['name']}**", "", f"![samples]({row['grid']})", ""]
  return (["Generated samples (fixed latents) with the student's labels, at the end of each run:",
           ""] + lines) if lines else []


def header_lines(mode, results):
  if mode.quick:
    lines = ["# Benchmarks, quick mode (smoke scale: not results)", "",
             "Produced by `python -m benchmarks.run --quick`: every section of BENCHMARKS.md in "
             "miniature, to check in minutes that every path runs. Teachers train on the first "
             f"{mode.train_records:,} Fashion-MNIST training records and the validation split "
             f"is the last {mode.validation_records:,} (an .npz passed with --data_dir), "
             "distillations run a few hundred private steps at batch 64, timings use a few "
             "steps. Row titles name the full-mode configuration; the commands and the steps "
             "column show what ran. The full-mode numbers are in BENCHMARKS.md only.", ""]
    return lines + last_run_lines(results, "This quick run")
  lines = ["# Benchmarks", "",
           "Every number below was produced by the command printed next to it, on the machine "
           "named there. Regenerate with `python -m benchmarks.run` (under 90 minutes on 2 CPU "
           "cores from scratch, below; finished runs under benchmarks/runs are reused). One "
           "seed each: differences under ~2 points are noise.", "",
           "**The test split chooses nothing.** The teachers (single, ensemble and DP-SGD) train "
           f"on the first {mode.train_records:,} Fashion-MNIST training records; the last "
           f"{mode.validation_records:,} are a validation split that no model trains on. Where "
           "a row compares configurations, each was run and evaluated on the validation split "
           "and only the best one on the test split (see \"Choices made on the validation "
           "split\"). The fixed configurations (the package defaults of the teacher-free "
           "generator, the DP-SGD settings, the step counts) were set before this benchmark and "
           "are not retuned here. The validation data are private records too: choosing among "
           "k private runs by their accuracy is itself a release that epsilon does not count "
           "(Papernot and Steinke 2022); it is common practice and it is said here.", "",
           "All numbers in this file are full-mode. `python -m benchmarks.run --quick` runs "
           "every section in miniature (under 10 minutes) and writes its smoke-scale numbers "
           "to [BENCHMARKS_quick.md](BENCHMARKS_quick.md) and benchmarks/results/quick/ only.",
           ""]
  return lines + last_run_lines(results, "The last whole run")


def last_run_lines(results, what):
  last = results.get("last_run")
  if not last:
    return []
  load = common.describe(last.get("other_load_cores"), last.get("cpus"))
  failed, reused = last.get("failed_sections"), last.get("reused_runs")
  return [f"{what} took {last['wall_seconds'] / 60:.1f} minutes on {last['machine']}, "
          f"{last['date']}"
          + (f", reusing {reused} finished runs of an earlier invocation" if reused else "")
          + f". {load}" + (f" Sections that failed: {', '.join(failed)}." if failed else "")
          + section_times(last), ""]


def section_times(last):
  """' Per section: accuracy 35.5 min, ...' for the sections of that whole run, or ''."""
  times = [f"{name} {seconds / 60:.1f} min"
           for name, seconds in (last.get("section_seconds") or {}).items()]
  return f" Per section: {', '.join(times)}." if times else ""


def section_lines(section):
  """'Machine: ...; measured ...' and, where stored, how long the section's last run took."""
  text = f"Machine: {section['machine']}; measured {section['date']}"
  if "wall_seconds" in section:
    reused = section.get("reused_runs")
    text += (f"; the section took {section['wall_seconds'] / 60:.1f} minutes"
             + (f", reusing {reused} finished runs" if reused else ""))
  return text + "."


def accuracy_lines(mode, section):
  lines = ["## Fashion-MNIST test accuracy", "",
           section_lines(section), "",
           "| model | test accuracy | validation accuracy | epsilon (delta 1e-5, teacher unit) | "
           "sigma | private steps |", "|---|---|---|---|---|---|"]
  for row in section["rows"]:
    lines.append(f"| {row['name']} | {100 * row['accuracy']:.1f}% | {validation_text(row)} | "
                 f"{epsilon_text(row['epsilon'])} | {sigma_text(row)} | {row.get('steps', '')} |")
  if not mode.quick:  # (in the quick mode the configurations are too short to read anything)
    lines += ["", "Reading: the non-private rows show what the method can do before noise (the "
              "teacher-guided and `adversarial` runs query the teacher without noise and are "
              "never private). The private rows are the honest single-teacher results: with one "
              "teacher every one of the B x T answers is a release, so at epsilon = 10 the "
              "per-entry noise (sigma above) dwarfs the normalized rows (norm 1), and the "
              "student stays at chance; the epsilon 1, 100 and 1000 rows show how the accuracy "
              "moves with the budget (the plot below). "
              "See docs/privacy.md."]
  lines += [""] + command_block(section["rows"])
  return lines + grid_lines(mode, section["rows"])


def privacy_lines(mode, section):
  lines = ["## Fashion-MNIST: ensemble-unit DPDFD against DP-SGD on the real data", "",
           section_lines(section) + " delta = 1e-5. The "
           "DPDFD rows use the default teacher-free generator unless stated.", "",
           "| model | test accuracy | validation accuracy | unit | epsilon | sigma | private "
           "steps |", "|---|---|---|---|---|---|---|"]
  for row in section["rows"]:
    lines.append(f"| {row['name']} | {100 * row['accuracy']:.1f}% | {validation_text(row)} | "
                 f"{row.get('unit', '')} | "
                 f"{epsilon_text(row['epsilon'])} | {sigma_text(row)} | "
                 f"{row.get('steps', '')} |")
  return lines + [""] + command_block(section["rows"]) + grid_lines(mode, section["rows"])


# ---- utility against epsilon -------------------------------------------------------------------


def rows_of(results, section):
  return (results.get(section) or {}).get("rows", [])


def utility_series(results):
  """{method: [(epsilon, accuracy)]} and {reference: accuracy}, from the stored rows only."""
  series = {"DPDFD, teacher unit": [], "DPDFD, ensemble unit": [], "DP-SGD on the real data": []}
  references = {}
  for row in rows_of(results, "accuracy"):
    name = row_run(row)
    if name == "teacher":
      references["non-private teacher"] = row["accuracy"]
    elif name == "student_sigma0":
      references["DPDFD student, sigma = 0 (not private)"] = row["accuracy"]
    elif re.fullmatch(r"student_eps\d+", name or "") and is_finite(row["epsilon"]):
      series["DPDFD, teacher unit"].append((row["epsilon"], row["accuracy"]))
  for row in rows_of(results, "privacy"):
    if not is_finite(row.get("epsilon")):
      continue
    if row.get("unit") == "dp_sgd":
      series["DP-SGD on the real data"].append((row["epsilon"], row["accuracy"]))
    elif re.fullmatch(r"ensemble_eps\d+(_\d+)?", row_run(row) or ""):  # the chosen runs
      series["DPDFD, ensemble unit"].append((row["epsilon"], row["accuracy"]))
  return {k: sorted(v) for k, v in series.items() if v}, references


def draw_utility_plot(series, references, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axis = pyplot.subplots(figsize=(9, 4.5))
  for (label, points), marker in zip(series.items(), "os^"):
    axis.plot([p[0] for p in points], [100 * p[1] for p in points], marker=marker, label=label)
  for (label, value), color in zip(references.items(), ("black", "grey")):
    axis.axhline(100 * value, linestyle="--", color=color, linewidth=1, label=label)
  axis.axhline(10, linestyle=":", color="lightgrey", linewidth=1, label="chance (10 classes)")
  axis.set_xscale("log")
  axis.set_xlabel("epsilon (delta = 1e-5, accounted)")
  axis.set_ylabel("Fashion-MNIST test accuracy (%)")
  axis.set_ylim(0, 100)
  axis.grid(True, which="both", alpha=0.3)
  axis.set_title("Fashion-MNIST: test accuracy against epsilon", fontsize=10)
  axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  figure.tight_layout()
  temporary = path[:-len(".png")] + ".partial.png"
  figure.savefig(temporary, dpi=100, metadata={"Software": None})
  pyplot.close(figure)
  os.replace(temporary, path)


def utility_lines(mode, results):
  series, references = utility_series(results)
  if not series:
    return []
  path = mode.result_file("utility_vs_epsilon.png")
  draw_utility_plot(series, references, path)
  nominal = lambda e: float(f"{e:.2g}")  # accounted 9.998 and 9.995 are both the target 10
  epsilons = sorted({nominal(e) for points in series.values() for e, _ in points})
  lines = ["## Utility against epsilon", "",
           "Test accuracy against the accounted epsilon (delta = 1e-5), drawn from the rows of "
           "the two sections above (their commands are there): the teacher-unit DPDFD students "
           "of the accuracy section (`student_eps*`), the ensemble-unit students of the privacy "
           "section in the configuration chosen on the validation split (`ensemble_eps*`) and "
           "the DP-SGD classifiers. Dashed: the non-private teacher and the sigma = 0 student.", "",
           f"![utility against epsilon]({path})", "",
           "| method | " + " | ".join(f"epsilon ~{e:,.0f}" if e >= 1 else f"epsilon ~{e:g}"
                                      for e in epsilons) + " |",
           "|---|" + "---|" * len(epsilons)]
  for label, points in series.items():
    cells = {nominal(e): f"{100 * a:.1f}%" for e, a in points}
    lines.append(f"| {label} | " + " | ".join(cells.get(e, "") for e in epsilons) + " |")
  return lines + [""]


# ---- downstream, literature, speed, audit --------------------------------------------------------


def downstream_lines(section):
  lines = ["## Downstream classifier trained only on DP synthetic data", "",
           section_lines(section) + " A small CNN (width 16) "
           "is trained only on samples of the run's DP generator, labelled by its DP student "
           "(`dpdfd_tf.generate`), and tested on the real Fashion-MNIST test set. Both are "
           "post-processing of the run's releases: the epsilon is the run's (delta = 1e-5).", "",
           "| synthetic data from | downstream test accuracy | unit | epsilon | samples | "
           "epochs |", "|---|---|---|---|---|---|"]
  for row in section["rows"]:
    lines.append(f"| {row['name']} | {100 * row['accuracy']:.1f}% | {row['unit']} | "
                 f"{epsilon_text(row['epsilon'])} | {row['samples']:,} | {row['epochs']} |")
  return lines + [""] + command_block(section["rows"])


LITERATURE = [("DP-MERF", 72.4, 71.7), ("DPGAN", 54.1, 59.5), ("DP-Sinkhorn", 56.3, 65.4),
              ("GS-WGAN", 12.5, 64.7)]


def literature_lines():
  lines = ["## Literature (not rerun here): DP generative models, downstream classifier on "
           "Fashion-MNIST", "",
           "Published downstream-classifier accuracies from independent re-runs of these "
           "methods, as quoted in the benchmark issue (delta = 1e-5). **They were not rerun "
           "here and are not directly comparable** to the rows above: different generators and "
           "downstream classifiers, a different protocol (number of synthetic samples, "
           "classifier training, hyper-parameter search) and possibly a different neighbouring "
           "relation (the DPDFD rows use replace-one; docs/privacy.md).", "",
           "| method | epsilon 1 | epsilon 10 |", "|---|---|---|"]
  lines += [f"| {name} | {low:.1f}% | {high:.1f}% |" for name, low, high in LITERATURE]
  return lines + [""]


def speed_lines(speed, where):
  ms = speed["median_ms"]
  load = common.describe(speed.get("other_load_cores"), speed.get("cpus"))
  lines = [f"## Step time{where} (batch {speed['batch_size']}, 28x28x1, one iteration = private "
           "student step + generator step)", "",
           f"Machine: {speed['machine']}{', ' + speed['device'] if 'device' in speed else ''}, "
           f"TensorFlow {speed['tensorflow']}; measured {speed['date']}"
           + f"; median of {speed['timed_steps']} alternating timed steps. {load}", "",
           "| variant | no XLA | XLA |", "|---|---|---|",
           f"| DPDFD step | {ms['dpdfd']:.1f} ms | {ms['dpdfd_xla']:.1f} ms |",
           f"| same step, DP part (normalization + noise) removed | {ms['no_dp']:.1f} ms | "
           f"{ms['no_dp_xla']:.1f} ms |", "",
           f"- DPDFD / non-private step: {speed['dp_overhead_ratio']:.3f} (no XLA), "
           f"{speed['dp_overhead_ratio_xla']:.3f} (XLA); target <= 1.3.",
           f"- XLA / no XLA for the DPDFD step: {speed['xla_over_plain_ratio']:.2f}.", ""]
  mechanisms = speed.get("mechanisms")
  if mechanisms:
    ms = mechanisms["median_ms"]
    lines += [f"Student mechanisms, one private student step alone (no generator step, no XLA), "
              f"batch {mechanisms['batch_size']}, median of {mechanisms['timed_steps']} "
              "alternating timed steps:", "",
              "| student mechanism | per student step |", "|---|---|",
              f"| output gradient (DPDFD: normalize + noise the [B, K] logit gradients) | "
              f"{ms['output_gradient']:.1f} ms |",
              f"| dp_optimizer (tensorflow-privacy DPKerasAdamOptimizer, num_microbatches=None) | "
              f"{ms['dp_optimizer']:.1f} ms |", "",
              f"- dp_optimizer / output gradient: "
              f"{mechanisms['dp_optimizer_over_output_gradient']:.1f}x (target: output gradient "
              f"at least {mechanisms['target_ratio']:g}x faster).", ""]
  scaling = speed.get("scaling")
  if scaling:
    lines += ["DPDFD iteration (no XLA) against the batch size, each batch size in a fresh "
              "process; peak memory is the process's peak resident set (VmHWM; TensorFlow has "
              "no CPU memory API), which includes TensorFlow itself:", "",
              "| batch | steps/s | samples/s | median step | peak resident memory after "
              "building | peak resident memory after the steps |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['batch_size']} | {row['steps_per_second']:.2f} | "
              f"{row['samples_per_second']:.0f} | {row['median_ms']:.1f} ms | "
              f"{row['peak_rss_mib_after_build']:.0f} MiB | {row['peak_rss_mib']:.0f} MiB |"
              for row in scaling]
    lines += [""]
  return lines + [f"Command: `{speed['command']}`", ""]


def audit_lines(section):
  try:
    return list(import_audit().markdown_lines(section)) + [""]
  except RuntimeError as error:
    return ["## Audit", "", f"(stored in the results, not drawn: {error})", ""]


def tuning_lines(results):
  """Every Choice's candidates with their validation accuracy, the chosen one in bold."""
  tuned = [row for section in ("accuracy", "privacy") for row in rows_of(results, section)
           if row.get("tuning")]
  if not tuned:
    return []
  lines = ["## Choices made on the validation split", "",
           "Each candidate ran in full and was evaluated on the validation split (records held "
           "out of the teachers' training data); the most accurate one, in bold, is the row "
           "reported above with its test accuracy. Nothing else was tried.", "",
           "| row | varied | candidate | validation accuracy | epsilon |", "|---|---|---|---|---|"]
  for row in tuned:
    for candidate in row["tuning"]["candidates"]:
      label = candidate["label"] or candidate["run"]
      if candidate["run"] == row["run"]:
        label = f"**{label}**"
      lines.append(f"| {row['name']} | {row['tuning']['grid']} | {label} | "
                   f"{100 * candidate['validation_accuracy']:.1f}% | "
                   f"{epsilon_text(candidate['epsilon'])} |")
  lines += ["", "Commands of the candidates not chosen (the chosen ones are with their rows):",
            "", "```"]
  lines += [candidate["command"] for row in tuned for candidate in row["tuning"]["candidates"]
            if candidate["run"] != row["run"]]
  return lines + ["```", ""]


def write_markdown(mode, results):
  lines = header_lines(mode, results)
  if results.get("accuracy"):
    lines += accuracy_lines(mode, results["accuracy"])
  if results.get("privacy"):
    lines += privacy_lines(mode, results["privacy"])
  lines += tuning_lines(results)
  lines += utility_lines(mode, results)
  if results.get("downstream"):
    lines += downstream_lines(results["downstream"])
  if not mode.quick:
    lines += literature_lines()
  for key, where in (("speed", ""), ("speed_gpu", " on a GPU")):
    if results.get(key):
      lines += speed_lines(results[key], where)
  if results.get("audit"):
    lines += audit_lines(results["audit"])
  with open(mode.markdown, "w") as f:
    f.write("\n".join(lines))


def load_results(mode):
  if not os.path.exists(mode.results):
    return {}
  with open(mode.results) as f:
    return json.load(f)


def save_results(mode, results):
  temporary = mode.results + ".partial"
  with open(temporary, "w") as f:
    json.dump(results, f, indent=2)
  os.replace(temporary, mode.results)


def main(argv):
  del argv
  mode = QUICK_MODE if QUICK.value else FULL
  if ONLY.value == ["markdown"]:  # rewrite the markdown from the stored results only
    write_markdown(mode, load_results(mode))
    return
  names = ONLY.value or DEFAULT_SECTIONS
  unknown = [name for name in names if name not in SECTIONS]
  if unknown:
    raise app.UsageError(f"unknown section(s) {unknown}; expected some of {sorted(SECTIONS)} "
                         "or 'markdown' alone")
  start, load = time.time(), common.OtherLoad()
  os.makedirs(mode.results_dir, exist_ok=True)
  ctx = Context(mode, RUNS_DIR.value or mode.runs_dir, load_results(mode))
  failed = {}
  section_seconds = {}
  for name in names:
    section_start, reused_before = time.time(), ctx.reused
    try:
      measured = SECTIONS[name](ctx)
    except Exception as error:  # pylint: disable=broad-except
      # One broken section must not cost the others (an hour of runs): report it at the end.
      traceback.print_exc()
      print(f"section {name} failed: {error}", file=sys.stderr, flush=True)
      failed[name] = str(error)
      continue
    stamp = {"machine": machine(), "date": datetime.date.today().isoformat(),
             "wall_seconds": round(time.time() - section_start, 1),
             "reused_runs": ctx.reused - reused_before}
    section_seconds[name] = stamp["wall_seconds"]
    ctx.results[name] = (dict(measured, **stamp) if isinstance(measured, dict)
                         else dict(rows=measured, **stamp))
    save_results(mode, ctx.results)
    write_markdown(mode, ctx.results)
  if not ONLY.value:  # a whole benchmark: record how long it took
    ctx.results["last_run"] = {"wall_seconds": time.time() - start, "machine": machine(),
                               "date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
                               "other_load_cores": load.cores(),
                               "failed_sections": sorted(failed), "reused_runs": ctx.reused,
                               "section_seconds": section_seconds}
    save_results(mode, ctx.results)
    write_markdown(mode, ctx.results)
  if mode.quick:  # BENCHMARKS.md again from the full-mode results, untouched
    write_markdown(FULL, load_results(FULL))
  print(open(mode.markdown).read())
  if failed:
    sys.exit("sections failed (nothing recorded for them):\n" + "\n".join(
        f"  {name}: {error.splitlines()[0] if error else ''}" for name, error in failed.items()))


if __name__ == "__main__":
  app.run(main)
