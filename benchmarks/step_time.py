r"""Step-time benchmark: the DP part's cost, and XLA against no XLA, measured side by side.

  python -m benchmarks.step_time --batch_size=256 --steps=40

Builds the Fashion-MNIST networks of flags/fashion_mnist.cfg (28x28x1; random weights: speed does
not depend on them) and times one DPDFD iteration (private student step + generator step):
  * dpdfd: the full step (rows normalized and noised),
  * no_dp: the same step with the mechanism removed (raw rows backpropagated),
each with and without XLA. Timings alternate between variants so that machine load hits all of
them alike; the median of --steps timed calls after two warm-up calls is reported. Writes
benchmarks/results/step_time.json.
"""

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags

import dpdfd_tf  # noqa: F401  (sets up tf.keras first)
from dpdfd_tf import architectures
from dpdfd_tf import distiller
from dpdfd_tf._compat import keras
import tensorflow as tf

BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Synthetic samples per step.")
STEPS = flags.DEFINE_integer("steps", 40, "Timed iterations per variant.")
OUTPUT = flags.DEFINE_string("output", "benchmarks/results/step_time.json", "Result file.")


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


def build(model_class, jit_compile, batch_size):
  keras.utils.set_random_seed(0)
  teacher = architectures.build_classifier("small_cnn", (28, 28, 1), 10, name="teacher")
  student = architectures.build_classifier("small_cnn", (28, 28, 1), 10, width=16)
  generator = architectures.build_generator((28, 28, 1))
  model = model_class(teacher, student, generator, batch_size=batch_size, noise_multiplier=1.0,
                      seed=0, noise_seed=0)
  model.compile(student_optimizer="adam", generator_optimizer="adam", jit_compile=jit_compile)
  model.make_train_function()
  return model


def main(argv):
  del argv
  variants = {f"{name}{'_xla' if jit else ''}": build(cls, jit, BATCH_SIZE.value)
              for name, cls in (("dpdfd", distiller.DPDFD), ("no_dp", WithoutMechanism))
              for jit in (False, True)}
  iterator = iter(tf.data.Dataset.from_tensors(0.0).repeat())
  for model in variants.values():
    for _ in range(2):  # tracing and XLA compilation
      model.train_function(iterator)
  times = {name: [] for name in variants}
  for _ in range(STEPS.value):
    for name, model in variants.items():
      start = time.perf_counter()
      logs = model.train_function(iterator)
      float(logs["generator_loss"])  # wait for the result
      times[name].append(time.perf_counter() - start)
  median_ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
  result = {
      "batch_size": BATCH_SIZE.value, "timed_steps": STEPS.value, "median_ms": median_ms,
      "dp_overhead_ratio": median_ms["dpdfd"] / median_ms["no_dp"],
      "dp_overhead_ratio_xla": median_ms["dpdfd_xla"] / median_ms["no_dp_xla"],
      "xla_over_plain_ratio": median_ms["dpdfd_xla"] / median_ms["dpdfd"],
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                 f"{'GPU' if tf.config.list_physical_devices('GPU') else 'no GPU'}",
      "device": device_name(),
      "tensorflow": tf.__version__,
  }
  os.makedirs(os.path.dirname(OUTPUT.value), exist_ok=True)
  with open(OUTPUT.value, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
