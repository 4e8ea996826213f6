"""Shared command-line plumbing: flag definitions shared by several commands, one-line errors.

Flags that more than one command reads (data, architectures) are defined here so that one
preset flagfile (flags/*.cfg) serves every command.
"""

import json
import logging as pylogging
import math
import os
import shutil
import sys

from absl import app
from absl import flags
from absl import logging

from dpdfd_tf import data
from dpdfd_tf.errors import DpdfdError

DATASET = flags.DEFINE_string(
    "dataset", "fashion_mnist", f"Dataset: one of {', '.join(sorted(data.DATASETS))}. For "
    "distill it only fixes the image shape, number of classes and class names: no data is read.")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Local data: a directory with the original IDX files or an .npz file. "
    "Default: a known local copy (Debian's dataset-fashion-mnist), else tensorflow-datasets.")
TEACHER_ARCHITECTURE = flags.DEFINE_enum(
    "teacher_architecture", "small_cnn", ["lenet5", "small_cnn", "resnet"],
    "Teacher architecture (train_teacher).")
TEACHER_WIDTH = flags.DEFINE_integer("teacher_width", None, "Teacher width (default per family).",
                                     lower_bound=0)
STUDENT_ARCHITECTURE = flags.DEFINE_enum(
    "student_architecture", "small_cnn", ["lenet5", "small_cnn", "resnet"], "Student architecture.")
STUDENT_WIDTH = flags.DEFINE_integer("student_width", 16, "Student width (filters of the first "
                                     "layer); None for the family default.", lower_bound=0)
SEED = flags.DEFINE_integer("seed", 0, "Seed for weight initialization, latents and data order.",
                            lower_bound=0)
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the run's files.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a finished run in --output_dir.")


# Flags of the commands that read preset flagfiles (train_teacher, distill). A preset sets flags
# for several commands; each command ignores the ones it does not define (absl --undefok), while
# a misspelled flag is still an error. tests/test_cli.py keeps this list in sync.
PRESET_FLAGS = (
    "epochs", "teacher_batch_size", "teacher_learning_rate",
    "teacher", "teacher_outputs", "teacher_input_range", "epsilon", "delta", "noise_multiplier",
    "clip_norm", "batch_size", "steps", "distillation_loss", "temperature", "generator_mode",
    "student_steps_per_iteration", "generator_steps_per_iteration", "generator_warmup_steps",
    "generator_confidence_weight", "generator_balance_weight", "generator_image_diversity_weight",
    "generator_feature_diversity_weight", "generator_released_rows_weight", "input_mixup",
    "latent_dim",
    "generator_width", "student_learning_rate", "generator_learning_rate", "jit_compile",
    "noise_seed", "steps_per_epoch", "log_every", "sample_every", "checkpoint_every",
    "num_teachers", "ensemble_epochs", "ensemble_batch_size", "ensemble_learning_rate",
    "dp_epsilon", "dp_delta", "dp_clip_norm", "teacher_privacy", "teacher_aggregation",
    "student_mechanism", "student_optimizer", "generator_clip_norm",
    "generator_teacher_guidance_weight", "mixed_precision", "strategy")


# Integer flags size tensors or count steps: TensorFlow takes them as 32-bit integers.
MAX_INTEGER_FLAG = 2**31 - 1


def run(main):
  """absl app.run with user errors reported as one line and exit status 2.

  Covers errors of the command (DpdfdError) and of the command line itself (unparsable or
  unknown flag values, unreadable flagfiles, out-of-range numbers).
  """
  sys.argv = sys.argv[:1] + [f"--undefok={','.join(PRESET_FLAGS)}"] + sys.argv[1:]

  def wrapped(argv):
    try:
      if len(argv) > 1:
        raise DpdfdError(f"unexpected arguments: {' '.join(argv[1:])}")
      return main(argv)
    except DpdfdError as error:
      _exit_with_error(error)

  app.run(wrapped, flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    remaining = flags.FLAGS(argv)
    _check_numeric_flags()
  except (flags.Error, DpdfdError) as error:
    _exit_with_error(error)
  return remaining


def _check_numeric_flags():
  """Every float flag must be a finite number, every integer flag fit in 32 bits.

  NaN slips through comparisons such as ``value > 0``, and an overflowing integer or float
  only fails deep inside TensorFlow, after the run has started.
  """
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if flag.value is None:
      continue
    if isinstance(flag.parser, flags.FloatParser) and not math.isfinite(flag.value):
      raise DpdfdError(f"--{name} must be a finite number, got {flag.value}")
    if isinstance(flag.parser, flags.IntegerParser) and abs(flag.value) > MAX_INTEGER_FLAG:
      raise DpdfdError(f"--{name}={flag.value} is out of range (at most {MAX_INTEGER_FLAG} in "
                       "absolute value)")


def _exit_with_error(error):
  program = os.path.basename(sys.argv[0]) if sys.argv else "dpdfd_tf"
  print(f"{program}: error: {one_line(str(error))}", file=sys.stderr)
  sys.exit(2)


def one_line(text):
  """``text`` with line breaks and other unprintable characters escaped (e.g. in a path)."""
  return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                 for c in text.strip())


def require(condition, message):
  if not condition:
    raise DpdfdError(message)


def check_output_dir(path, finished_marker, overwrite, resumable=False):
  """Validates --output_dir before any work. Returns True if an unfinished run should resume.

  A directory holding a finished run (``finished_marker`` exists) is an error unless
  ``overwrite``; nothing is deleted here (see ``clear_output_dir``), so bad input never changes
  files.
  """
  require(path, "--output_dir is required")
  if os.path.exists(path) and not os.path.isdir(path):
    raise DpdfdError(f"--output_dir {path} exists and is not a directory")
  if not os.path.isdir(path) or not os.listdir(path):
    return False
  if overwrite:
    return False
  if os.path.exists(os.path.join(path, finished_marker)):
    raise DpdfdError(f"{path} already holds a finished run; pass --overwrite to replace it or "
                     "choose another --output_dir")
  if resumable:
    return True
  raise DpdfdError(f"{path} is not empty; pass --overwrite to replace its contents")


def clear_output_dir(path):
  if os.path.isdir(path):
    shutil.rmtree(path)
  os.makedirs(path, exist_ok=True)


def write_json(path, payload):
  temporary = path + ".partial"
  with open(temporary, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(temporary, path)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def flag_values(names):
  return {name: flags.FLAGS[name].value for name in names}


def configure_logging():
  """Our progress lines at INFO on stderr; TensorFlow's own chatter only from WARNING up."""
  logging.set_verbosity(logging.WARNING)
  logger = log()
  if not logger.handlers:
    handler = pylogging.StreamHandler(sys.stderr)
    handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                             "%H:%M:%S"))
    logger.addHandler(handler)
  logger.setLevel(pylogging.INFO)
  logger.propagate = False


def log():
  return pylogging.getLogger("dpdfd_tf")
