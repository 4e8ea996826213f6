r"""Privacy calculator: epsilon for a configuration, or the noise needed for a target epsilon.

  python -m dpdfd_tf.privacy --noise_multiplier=758 --batch_size=256 --steps=2000 --delta=1e-5
  python -m dpdfd_tf.privacy --target_epsilon=10 --batch_size=256 --steps=2000 --delta=1e-5

Units (docs/privacy.md): teacher (default), teacher_ensemble and teacher_sampled
(--num_teachers), dp_optimizer (a tensorflow-privacy DP optimizer on the student), dp_sgd
(--dataset_size).
"""

from absl import flags

from dpdfd_tf import cli  # sets up tf.keras (see _compat)
from dpdfd_tf import accounting
from dpdfd_tf.errors import DpdfdError

NOISE = flags.DEFINE_float("noise_multiplier", None, "sigma (noise std in units of C).")
TARGET_EPSILON = flags.DEFINE_float("target_epsilon", None, "Find the sigma for this epsilon.")
BATCH = flags.DEFINE_integer("batch_size", 256, "B.")
STEPS = flags.DEFINE_integer("steps", 1000, "Number of private steps.")
DELTA = flags.DEFINE_float("delta", 1e-5, "delta.")
UNIT = flags.DEFINE_enum("unit", "teacher", list(accounting.UNITS), "Unit of privacy.")
NUM_TEACHERS = flags.DEFINE_integer("num_teachers", 1, "M (teacher_ensemble, teacher_sampled).")
DATASET_SIZE = flags.DEFINE_integer("dataset_size", None, "N private records (dp_sgd unit).")


def main(argv):
  del argv
  cli.require((NOISE.value is None) != (TARGET_EPSILON.value is None),
              "pass exactly one of --noise_multiplier and --target_epsilon")
  try:
    release = accounting.Release(NOISE.value or 0.0, BATCH.value, STEPS.value, UNIT.value,
                                 NUM_TEACHERS.value, DATASET_SIZE.value)
    if TARGET_EPSILON.value is not None:
      sigma = accounting.calibrate_noise_multiplier(TARGET_EPSILON.value, DELTA.value, release)
      release = accounting.Release(sigma, BATCH.value, STEPS.value, UNIT.value,
                                   NUM_TEACHERS.value, DATASET_SIZE.value)
      print(f"noise multiplier for epsilon <= {TARGET_EPSILON.value:g}: sigma = {sigma:.6g}")
    report = accounting.privacy_report(release, DELTA.value)
  except ValueError as error:
    raise DpdfdError(str(error)) from None
  print(accounting.describe(report).replace(", C = 1", ""))


if __name__ == "__main__":
  cli.run(main)
