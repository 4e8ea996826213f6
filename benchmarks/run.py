r"""Measures what BENCHMARKS.md reports and rewrites it: every number next to the command
that produced it.

  python -m benchmarks.run                 # all sections, about an hour on 2 CPU cores
  python -m benchmarks.run --only=speed    # one section
  bash benchmarks/gpu_check.sh             # speed_gpu: the same on a GPU, when there is one

Sections: accuracy (Fashion-MNIST teacher; non-private DFAD and teacher-free students; the main
job's private student), speed (benchmarks.step_time) and, only when asked for, speed_gpu (the
same on a GPU). Runs go to --runs_dir (reused when a finished run is already there, so an
interrupted benchmark continues); results accumulate in benchmarks/results/results.json.
"""

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys

from absl import app
from absl import flags

from dpdfd_tf import accounting

RUNS_DIR = flags.DEFINE_string("runs_dir", "benchmarks/runs", "Where the runs are written.")
ONLY = flags.DEFINE_list("only", [], "Sections to run (accuracy, speed, speed_gpu); default "
                        "accuracy and speed. "
                        "'markdown' only rewrites BENCHMARKS.md from the stored results.")
RESULTS = "benchmarks/results/results.json"
PRESET = "--flagfile=flags/fashion_mnist.cfg"


def python_command(*args):
  return ["python", "-m", *args]


def run(command):
  """Runs a command (shown as typed), returns stdout; raises with its stderr on failure."""
  print("+", " ".join(command), flush=True)
  full = [sys.executable] + command[1:] if command[0] == "python" else command
  result = subprocess.run(full, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  return result.stdout


def accuracy(output):
  return float(re.findall(r"test accuracy: ([0-9.]+)", output)[-1])


def distilled_accuracy(runs, name, teacher, *flags_):
  """Distills (unless already finished) and evaluates; returns (accuracy, report, commands)."""
  out = os.path.join(runs, name)
  distill = python_command("dpdfd_tf.distill", PRESET, f"--teacher={teacher}", *flags_,
                           f"--output_dir={out}")
  if not os.path.exists(os.path.join(out, "privacy_report.json")):
    run(distill)
  evaluate = python_command("dpdfd_tf.evaluate", "--dataset=fashion_mnist",
                            f"--model={out}/student")
  value = accuracy(run(evaluate))
  with open(os.path.join(out, "privacy_report.json")) as f:
    report = json.load(f)
  return value, report, [" ".join(distill), " ".join(evaluate)]


def accuracy_section(runs):
  teacher_dir = os.path.join(runs, "teacher")
  train = python_command("dpdfd_tf.train_teacher", PRESET, f"--output_dir={teacher_dir}")
  if not os.path.exists(os.path.join(teacher_dir, "teacher.json")):
    run(train)
  teacher = os.path.join(teacher_dir, "model")
  evaluate = python_command("dpdfd_tf.evaluate", "--dataset=fashion_mnist", f"--model={teacher}")
  rows = [{"name": "teacher (small CNN, 3 epochs, non-private)",
           "accuracy": accuracy(run(evaluate)), "epsilon": "inf (not private)",
           "commands": [" ".join(train), " ".join(evaluate)]}]
  configurations = [
      ("non-private, teacher as discriminator (DAFL), 1,000 steps",
       "dafl_sigma0", ["--generator_mode=teacher", "--noise_multiplier=0"]),
      ("non-private, teacher-student discrepancy (DFAD), 3,000 steps, 5 student : 1 generator, "
       "L1 distillation", "dfad_l1_sigma0", ["--generator_mode=adversarial",
                                             "--noise_multiplier=0", "--steps=3000",
                                             "--student_steps_per_iteration=5",
                                             "--distillation_loss=l1"]),
      ("non-private, teacher-student discrepancy (DFAD), 3,000 steps, 5 student : 1 generator, "
       "L1 distillation, no mixup", "dfad_l1_nomix_sigma0",
       ["--generator_mode=adversarial", "--noise_multiplier=0", "--steps=3000",
        "--student_steps_per_iteration=5", "--distillation_loss=l1", "--noinput_mixup"]),
      ("non-private, teacher-student discrepancy (DFAD), 3,000 steps, 5 student : 1 generator, "
       "KL, no mixup", "dfad_sigma0", ["--generator_mode=adversarial", "--noise_multiplier=0",
                                       "--steps=3000", "--student_steps_per_iteration=5",
                                       "--noinput_mixup"]),
      ("private mode with noise switched off (sigma = 0), default teacher-free generator, "
       "1,000 steps", "student_sigma0", ["--noise_multiplier=0"]),
      ("private: the main job, epsilon = 10, default teacher-free generator, 1,000 steps",
       "student_eps10", ["--epsilon=10"]),
  ]
  for title, name, extra in configurations:
    value, report, commands = distilled_accuracy(runs, name, teacher, *extra)
    grid = f"benchmarks/results/samples_{name}.png"
    shutil.copyfile(os.path.join(runs, name, "samples.png"), grid)
    rows.append({"name": title, "accuracy": value, "epsilon": report["epsilon"],
                 "noise_multiplier": report["noise_multiplier"],
                 "steps": report["private_steps"], "commands": commands, "grid": grid})
  return rows


ENSEMBLE_SIZE = 250
DP_SGD_FLAGS = ["--teacher_width=16", "--epochs=4", "--teacher_batch_size=256"]


def trained_teacher(runs, name, *flags_):
  """Trains (unless finished) a teacher; returns (model path, teacher.json, command)."""
  out = os.path.join(runs, name)
  command = python_command("dpdfd_tf.train_teacher", PRESET, *flags_, f"--output_dir={out}")
  if not os.path.exists(os.path.join(out, "teacher.json")):
    run(command)
  with open(os.path.join(out, "teacher.json")) as f:
    return os.path.join(out, "model"), json.load(f), " ".join(command)


def distilled_row(runs, title, name, teacher, *extra):
  value, report, commands = distilled_accuracy(runs, name, teacher, *extra)
  grid = f"benchmarks/results/samples_{name}.png"
  shutil.copyfile(os.path.join(runs, name, "samples.png"), grid)
  return {"name": title, "accuracy": value, "epsilon": report["epsilon"],
          "noise_multiplier": report["noise_multiplier"], "unit": report["unit"],
          "steps": report["private_steps"], "commands": commands, "grid": grid}


def privacy_section(runs):
  """Ensemble-unit DPDFD students at epsilon 1 and 10 next to DP-SGD on the real data."""
  ensemble, record, command = trained_teacher(runs, f"ensemble{ENSEMBLE_SIZE}",
                                              f"--num_teachers={ENSEMBLE_SIZE}")
  rows = [{"name": f"teacher ensemble, M = {ENSEMBLE_SIZE} on disjoint shards of "
                   f"{record['records_per_teacher']} records (averaged vote; one member: "
                   f"{100 * record['member_test_accuracy']['mean']:.1f}% on average)",
           "accuracy": record["test_accuracy"], "epsilon": "inf (not private)",
           "commands": [command]}]
  for epsilon in (1, 10):
    _, record, command = trained_teacher(runs, f"dpsgd_eps{epsilon}", f"--dp_epsilon={epsilon}",
                                         *DP_SGD_FLAGS)
    rows.append({"name": f"DP-SGD classifier on the real data (tensorflow-privacy DPModel, "
                         f"Poisson sampling, 4 epochs), epsilon {epsilon}",
                 "accuracy": record["test_accuracy"], "epsilon": record["privacy"]["epsilon"],
                 "noise_multiplier": record["privacy"]["noise_multiplier"], "unit": "dp_sgd",
                 "steps": record["privacy"]["private_steps"], "commands": [command]})
  for title, name, extra in [
      ("DPDFD, ensemble, sigma = 0 (not private: the ceiling), 1,000 steps", "ensemble_sigma0",
       ["--noise_multiplier=0"]),
      ("DPDFD, ensemble unit, epsilon 10, 1,000 steps", "ensemble_eps10", ["--epsilon=10"]),
      ("DPDFD, ensemble unit, epsilon 10, 400 steps", "ensemble_eps10_400",
       ["--epsilon=10", "--steps=400"]),
      ("DPDFD, ensemble unit, epsilon 10, private teacher-guided generator (L1), 1,000 steps",
       "ensemble_eps10_guided", ["--epsilon=10", "--generator_mode=dp_teacher_guided",
                                 "--distillation_loss=l1"]),
      ("DPDFD, ensemble unit, epsilon 1, 1,000 steps", "ensemble_eps1", ["--epsilon=1"]),
  ]:
    rows.append(distilled_row(runs, title, name, ensemble, *extra))
  return rows


def speed_section(runs, output=None):
  """benchmarks.step_time; an ``output`` of its own keeps the CPU figures apart (speed_gpu)."""
  del runs
  extra = [f"--output={output}"] if output else []
  command = python_command("benchmarks.step_time", "--batch_size=256", "--steps=40", *extra)
  run(command)
  with open(output or "benchmarks/results/step_time.json") as f:
    result = json.load(f)
  result["command"] = " ".join(command)
  return result


def gpu_speed_section(runs):
  result = speed_section(runs, "benchmarks/results/step_time_gpu.json")
  if result["device"] == "no GPU":  # CPU figures must not be recorded as a GPU's
    raise RuntimeError("TensorFlow sees no GPU (BUILD.md, GPU); nothing recorded")
  return result


def machine():
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}, {platform.system()}")


def write_markdown(results):
  lines = ["# Benchmarks", "",
           "Every number below was produced by the command printed next to it, on the machine "
           "named there. Regenerate with `python -m benchmarks.run` (about an hour on 2 CPU "
           "cores; finished runs under benchmarks/runs are reused). One seed each: differences under ~2 points are noise.", ""]
  accuracy_result = results.get("accuracy")
  if accuracy_result:
    lines += ["## Fashion-MNIST test accuracy", "",
              f"Machine: {accuracy_result['machine']}; measured {accuracy_result['date']}.", "",
              "| model | test accuracy | epsilon (delta 1e-5, teacher unit) | sigma |",
              "|---|---|---|---|"]
    for row in accuracy_result["rows"]:
      epsilon = row["epsilon"]
      epsilon = accounting.format_epsilon(epsilon) if isinstance(epsilon, float) else epsilon
      sigma = row.get("noise_multiplier")
      lines.append(f"| {row['name']} | {100 * row['accuracy']:.1f}% | {epsilon} | "
                   f"{'' if sigma is None else f'{sigma:.4g}'} |")
    lines += ["", "Reading: the non-private rows show what the method can do before noise (the "
              "teacher-guided and `adversarial` runs query the teacher without noise and are "
              "never private). The private row is the honest single-teacher result: at "
              "epsilon = 10 the per-entry noise (sigma above) dwarfs the normalized rows "
              "(norm 1), and the student stays at chance. See docs/privacy.md.",
              "", "Commands:", "", "```"]
    for row in accuracy_result["rows"]:
      lines += row["commands"]
    lines += ["```", "", "Generated samples (fixed latents) with the student's labels, at the end "
              "of each run:", ""]
    for row in accuracy_result["rows"]:
      if row.get("grid") and os.path.exists(row["grid"]):
        lines += [f"**{row['name']}**", "", f"![samples]({row['grid']})", ""]
  if results.get("privacy"):
    lines += privacy_lines(results["privacy"])
  for key, where in (("speed", ""), ("speed_gpu", " on a GPU")):
    if results.get(key):
      lines += speed_lines(results[key], where)
  with open("BENCHMARKS.md", "w") as f:
    f.write("\n".join(lines))


def privacy_lines(section):
  lines = ["## Fashion-MNIST: ensemble-unit DPDFD against DP-SGD on the real data", "",
           f"Machine: {section['machine']}; measured {section['date']}. delta = 1e-5. The "
           "DPDFD rows use the default teacher-free generator unless stated.", "",
           "| model | test accuracy | unit | epsilon | sigma | private steps |",
           "|---|---|---|---|---|---|"]
  for row in section["rows"]:
    epsilon = row["epsilon"]
    epsilon = accounting.format_epsilon(epsilon) if isinstance(epsilon, float) else epsilon
    sigma = row.get("noise_multiplier")
    lines.append(f"| {row['name']} | {100 * row['accuracy']:.1f}% | {row.get('unit', '')} | "
                 f"{epsilon} | {'' if sigma is None else f'{sigma:.4g}'} | "
                 f"{row.get('steps', '')} |")
  lines += ["", "Commands:", "", "```"]
  for row in section["rows"]:
    lines += row["commands"]
  lines += ["```", ""]
  for row in section["rows"]:
    if row.get("grid") and os.path.exists(row["grid"]):
      lines += [f"**{row['name']}**", "", f"![samples]({row['grid']})", ""]
  return lines


def speed_lines(speed, where):
  ms = speed["median_ms"]
  return [f"## Step time{where} (batch 256, 28x28x1, one iteration = private student step + "
          "generator step)", "",
          f"Machine: {speed['machine']}{', ' + speed['device'] if 'device' in speed else ''}, "
          f"TensorFlow {speed['tensorflow']}; measured "
          f"{speed['date']}; median of {speed['timed_steps']} alternating timed steps.", "",
          "| variant | no XLA | XLA |", "|---|---|---|",
          f"| DPDFD step | {ms['dpdfd']:.1f} ms | {ms['dpdfd_xla']:.1f} ms |",
          f"| same step, DP part (normalization + noise) removed | {ms['no_dp']:.1f} ms | "
          f"{ms['no_dp_xla']:.1f} ms |", "",
          f"- DPDFD / non-private step: {speed['dp_overhead_ratio']:.3f} (no XLA), "
          f"{speed['dp_overhead_ratio_xla']:.3f} (XLA); target <= 1.3.",
          f"- XLA / no XLA for the DPDFD step: {speed['xla_over_plain_ratio']:.2f}.", "",
          f"Command: `{speed['command']}`", ""]


def main(argv):
  del argv
  if ONLY.value == ["markdown"]:  # rewrite BENCHMARKS.md from the stored results only
    with open(RESULTS) as f:
      write_markdown(json.load(f))
    return
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  results = {}
  if os.path.exists(RESULTS):
    with open(RESULTS) as f:
      results = json.load(f)
  sections = {"accuracy": accuracy_section, "privacy": privacy_section, "speed": speed_section,
              "speed_gpu": gpu_speed_section}
  for name in ONLY.value or ("accuracy", "privacy", "speed"):
    if name not in sections:
      raise app.UsageError(f"unknown section {name!r}; expected one of {sorted(sections)}")
    measured = sections[name](RUNS_DIR.value)
    stamp = {"machine": machine(), "date": datetime.date.today().isoformat()}
    results[name] = (dict(measured, **stamp) if isinstance(measured, dict)
                     else dict(rows=measured, **stamp))
    with open(RESULTS, "w") as f:
      json.dump(results, f, indent=2)
    write_markdown(results)
  print(open("BENCHMARKS.md").read())


if __name__ == "__main__":
  app.run(main)
