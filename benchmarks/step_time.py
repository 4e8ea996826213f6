r"""Step-time benchmark: the DP part's cost, XLA against no XLA, the output-gradient mechanism
against a DP optimizer, and speed and memory against the batch size.

  python -m benchmarks.step_time --batch_size=256 --steps=40 --mechanism_steps=10 \
      --scaling_batch_sizes=64,256,1024 --scaling_steps=20

Builds the Fashion-MNIST networks of flags/fashion_mnist.cfg (28x28x1; random weights: speed does
not depend on them) and measures, side by side in one process:
  1. one DPDFD iteration (private student step + generator step) at --batch_size:
     * dpdfd: the full step (rows normalized and noised),
     * no_dp: the same step with the mechanism removed (raw rows backpropagated),
     each with and without XLA (--steps timed calls each);
  2. one private student step alone (no generator step, no XLA) at --batch_size with each student
     mechanism (--mechanism_steps timed calls each):
     * output_gradient: DPDFD (normalize and noise the [B, K] logit gradients),
     * dp_optimizer: tensorflow-privacy's DPKerasAdamOptimizer, num_microbatches=None (one
       clipped weight gradient per sample);
  3. steps per second and peak memory of the DPDFD iteration (no XLA) at each of
     --scaling_batch_sizes, each batch size in a fresh subprocess (--scaling_steps timed calls):
     TensorFlow has no CPU memory-info API, so the peak is the process's peak resident set
     (VmHWM, and resource.getrusage ru_maxrss beside it), read after building and again after
     the timed steps.
Timings alternate between the variants of one comparison so that machine load hits all of them
alike; each variant gets two untimed warm-up calls (tracing, XLA compilation) and the median of
its timed calls is reported. The CPU time other processes used meanwhile is recorded too (other
jobs on the machine slow every variant; the ratios are what this measures). Writes --output.
"""

import json
import os
import platform
import resource
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common
import dpdfd_tf  # noqa: F401  (sets up tf.keras first)
from dpdfd_tf import architectures
from dpdfd_tf import distiller
from dpdfd_tf._compat import keras
import tensorflow as tf

BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Synthetic samples per step (comparisons 1 "
                                  "and 2).")
STEPS = flags.DEFINE_integer("steps", 40, "Timed iterations per variant (comparison 1).")
MECHANISM_STEPS = flags.DEFINE_integer(
    "mechanism_steps", 10, "Timed student steps per mechanism (comparison 2); 0 skips it.")
SCALING_BATCH_SIZES = flags.DEFINE_list(
    "scaling_batch_sizes", ["64", "256", "1024"], "Batch sizes of comparison 3, each in a fresh "
    "process; empty skips it.")
SCALING_STEPS = flags.DEFINE_integer("scaling_steps", 20, "Timed iterations per batch size "
                                     "(comparison 3).")
SCALING_CHILD = flags.DEFINE_bool(
    "scaling_child", False, "Internal: time the DPDFD iteration at --batch_size for --steps "
    "calls in this process and print one JSON line (steps per second, peak memory).")
OUTPUT = flags.DEFINE_string("output", "benchmarks/results/step_time.json", "Result file.")

DP_OPTIMIZER_LEARNING_RATE = 1e-3  # Keras Adam's default, as the other variants use


class WithoutMechanism(distiller.DPDFD):
  """DPDFD with the DP part (normalization and noise) removed: the non-private reference."""

  def release_rows(self, rows):
    return rows


def device_name():
  """The GPU the variants run on, or 'no GPU'."""
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return "no GPU"
  return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def dp_adam(noise_multiplier, clip_norm=1.0):
  """The student optimizer of ``distill --student_mechanism=dp_optimizer`` (its Adam variant)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras
  return dp_optimizer_keras.DPKerasAdamOptimizer(
      l2_norm_clip=clip_norm, noise_multiplier=noise_multiplier, num_microbatches=None,
      learning_rate=DP_OPTIMIZER_LEARNING_RATE)


def build(model_class, jit_compile, batch_size, student_optimizer="adam", **options):
  """A DPDFD-like model with the preset's networks, traced and ready to time.

  ``options`` go to the model (e.g. ``student_mechanism``, ``generator_steps_per_iteration``).
  """
  keras.utils.set_random_seed(0)
  teacher = architectures.build_classifier("small_cnn", (28, 28, 1), 10, name="teacher")
  student = architectures.build_classifier("small_cnn", (28, 28, 1), 10, width=16)
  generator = architectures.build_generator((28, 28, 1))
  model = model_class(teacher, student, generator, batch_size=batch_size, noise_multiplier=1.0,
                      seed=0, noise_seed=0, **options)
  model.compile(student_optimizer=student_optimizer, generator_optimizer="adam",
                jit_compile=jit_compile)
  model.make_train_function()
  return model


def time_alternating(variants, steps):
  """{name: [seconds per train_function call]}: two warm-up calls each, then ``steps`` timed
  calls per variant, alternating between the variants."""
  iterator = iter(tf.data.Dataset.from_tensors(0.0).repeat())
  for model in variants.values():
    for _ in range(2):  # tracing and XLA compilation
      model.train_function(iterator)
  times = {name: [] for name in variants}
  for _ in range(steps):
    for name, model in variants.items():
      start = time.perf_counter()
      logs = model.train_function(iterator)
      float(logs["student_batch_entropy"])  # wait for the result
      times[name].append(time.perf_counter() - start)
  return times


def median_ms(times):
  return {name: 1000 * statistics.median(values) for name, values in times.items()}


def peak_rss_mib():
  """(peak resident set of this process so far in MiB, ru_maxrss in MiB).

  The first is VmHWM of /proc/self/status where there is one: ru_maxrss (KiB on Linux) carries
  the launching process's peak across fork and exec, so a child started by a bigger process
  reads its parent's peak; VmHWM belongs to the program's own address space. The scaling
  children are started before the parent builds anything, so the two agree when all is well.
  """
  ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  try:
    with open("/proc/self/status") as f:
      fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, ru_maxrss
  except (OSError, KeyError, ValueError):
    return ru_maxrss, ru_maxrss


def xla_and_dp_overhead(batch_size, steps):
  """Comparison 1: the DPDFD iteration with and without the DP part, with and without XLA."""
  variants = {f"{name}{'_xla' if jit else ''}": build(cls, jit, batch_size)
              for name, cls in (("dpdfd", distiller.DPDFD), ("no_dp", WithoutMechanism))
              for jit in (False, True)}
  ms = median_ms(time_alternating(variants, steps))
  return {"batch_size": batch_size, "timed_steps": steps, "median_ms": ms,
          "dp_overhead_ratio": ms["dpdfd"] / ms["no_dp"],
          "dp_overhead_ratio_xla": ms["dpdfd_xla"] / ms["no_dp_xla"],
          "xla_over_plain_ratio": ms["dpdfd_xla"] / ms["dpdfd"]}


def mechanisms(batch_size, steps):
  """Comparison 2: one private student step with each student mechanism (no XLA)."""
  student_only = {"generator_steps_per_iteration": 0}
  variants = {
      "output_gradient": build(distiller.DPDFD, False, batch_size, **student_only),
      "dp_optimizer": build(distiller.DPDFD, False, batch_size, dp_adam(1.0),
                            student_mechanism="dp_optimizer", **student_only),
  }
  ms = median_ms(time_alternating(variants, steps))
  return {"batch_size": batch_size, "timed_steps": steps, "median_ms": ms,
          "dp_optimizer_over_output_gradient": ms["dp_optimizer"] / ms["output_gradient"],
          "target_ratio": 3.0}


def scaling_child(batch_size, steps):
  """Comparison 3, in a fresh process: the DPDFD iteration at one batch size."""
  model = build(distiller.DPDFD, False, batch_size)
  built, _ = peak_rss_mib()
  times = time_alternating({"dpdfd": model}, steps)["dpdfd"]
  peak, ru_maxrss = peak_rss_mib()
  return {"batch_size": batch_size, "timed_steps": steps,
          "median_ms": 1000 * statistics.median(times),
          "steps_per_second": len(times) / sum(times),
          "samples_per_second": batch_size * len(times) / sum(times),
          "peak_rss_mib_after_build": built, "peak_rss_mib": peak, "ru_maxrss_mib": ru_maxrss}


def scaling(batch_sizes, steps):
  """Comparison 3: one fresh ``--scaling_child`` process per batch size, one after another."""
  rows = []
  for batch_size in batch_sizes:
    output = common.run(["python", "-m", "benchmarks.step_time", "--scaling_child",
                         f"--batch_size={batch_size}", f"--steps={steps}"], echo=False)
    rows.append(json.loads(output.strip().splitlines()[-1]))
  return rows


def main(argv):
  del argv
  if SCALING_CHILD.value:
    print(json.dumps(scaling_child(BATCH_SIZE.value, STEPS.value)))
    return
  load = common.OtherLoad()
  # The scaling children first, while this process is small (see peak_rss_mib).
  scaled = scaling([int(b) for b in SCALING_BATCH_SIZES.value], SCALING_STEPS.value)
  result = xla_and_dp_overhead(BATCH_SIZE.value, STEPS.value)
  if MECHANISM_STEPS.value > 0:
    result["mechanisms"] = mechanisms(BATCH_SIZE.value, MECHANISM_STEPS.value)
  if scaled:
    result["scaling"] = scaled
  result.update({
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                 f"{'GPU' if tf.config.list_physical_devices('GPU') else 'no GPU'}",
      "device": device_name(),
      "tensorflow": tf.__version__,
      "cpus": os.cpu_count(),
      "other_load_cores": load.cores(),
  })
  os.makedirs(os.path.dirname(OUTPUT.value) or ".", exist_ok=True)
  with open(OUTPUT.value, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
