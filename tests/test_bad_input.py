"""Bad input through the command lines: malformed files and random flag values.

Every case must end with a non-zero exit, one error line at the end of stderr (no traceback),
and no file changed under an --output_dir that already holds finished runs. Each case starts a
process (seconds of TensorFlow import), so the random cases are few and derandomized.
"""

import math
import shutil

from absl import flags
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from conftest import assert_rejected
from dpdfd_tf import architectures
from dpdfd_tf import data
from dpdfd_tf import export
from dpdfd_tf import teachers
from dpdfd_tf.errors import DpdfdError


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, digits_teacher_path):
  """An --output_dir holding a finished run of every command, plus a file of the user's own."""
  directory = tmp_path_factory.mktemp("finished_runs")
  (directory / "notes.txt").write_text("the user's own file\n")
  shutil.copytree(digits_teacher_path, directory / "model")
  (directory / "teacher.json").write_text('{"test_accuracy": 0.9}\n')
  (directory / "student").mkdir()
  (directory / "student" / "saved_model.pb").write_bytes(b"finished student")
  (directory / "privacy_report.json").write_text('{"epsilon": 1.0}\n')
  np.savez(directory / "synthetic.npz", images=np.zeros((2, 8, 8, 1), np.float32),
           labels=np.zeros(2, np.int64))
  return directory


# --- Malformed files ---------------------------------------------------------------------------


def truncate(path, fraction=0.5):
  with open(path, "r+b") as f:
    f.truncate(int(len(f.read()) * fraction))


def idx_bytes(array):
  """An IDX file: magic bytes 0, 0, 0x08 (unsigned bytes), ndim; big-endian sizes; the data."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(size).to_bytes(4, "big") for size in array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_idx_dir(directory, rng):
  directory.mkdir()
  for prefix in ("train", "t10k"):
    (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
        idx_bytes(rng.integers(0, 256, (20, 8, 8))))
    (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 10, 20)))
  return directory


def save_npz(path, images, labels):
  np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
  return path


@pytest.fixture(scope="module")
def malformed(tmp_path_factory, digits_teacher_path):
  """Damaged models and data files, named as the cases below refer to them."""
  root = tmp_path_factory.mktemp("malformed")
  rng = np.random.default_rng(0)
  for name, damaged in (("truncated_graph", "saved_model.pb"),
                        ("truncated_weights", "variables/variables.data-00000-of-00001")):
    shutil.copytree(digits_teacher_path, root / name)
    truncate(root / name / damaged)
  (root / "not_a_model").mkdir()
  (root / "not_a_model" / "README").write_text("no model here\n")
  (root / "text").mkdir()
  (root / "text" / "model.keras").write_text("this is not a model\n")

  images = rng.integers(0, 256, (20, 8, 8)).astype(np.uint8)
  labels = rng.integers(0, 10, 20)
  save_npz(root / "text_images.npz", images.astype(str), labels)
  save_npz(root / "wrong_shape.npz", images[:, :5, :5], labels)
  save_npz(root / "scalar_images.npz", np.uint8(3), labels)
  save_npz(root / "two_dim_labels.npz", images, np.stack([labels, labels], 1))
  save_npz(root / "labels_out_of_range.npz", images, labels + 10)
  save_npz(root / "nan_images.npz", np.full((20, 8, 8), np.nan, np.float32), labels)
  save_npz(root / "empty.npz", images[:0], labels[:0])
  np.savez(root / "missing_keys.npz", pixels=images, classes=labels)
  shutil.copyfile(save_npz(root / "truncated.npz", images, labels), root / "whole.npz")
  truncate(root / "truncated.npz")

  bad_magic = write_idx_dir(root / "idx_bad_magic", rng) / "train-images-idx3-ubyte"
  bad_magic.write_bytes(b"\x12\x34" + bad_magic.read_bytes()[2:])
  truncate(write_idx_dir(root / "idx_truncated", rng) / "train-images-idx3-ubyte")
  write_idx_dir(root / "idx_whole", rng)
  labels_file = write_idx_dir(root / "idx_labels_out_of_range", rng) / "train-labels-idx1-ubyte"
  labels_file.write_bytes(idx_bytes(np.full(20, 200)))
  return root


MALFORMED_CASES = [
    # (id, command, flags; {m} is the malformed-files directory, {out} the finished runs)
    ("distill, truncated saved_model.pb", "distill",
     ["--teacher={m}/truncated_graph", "--noise_multiplier=1"], "cannot load"),
    ("distill, truncated variables", "distill",
     ["--teacher={m}/truncated_weights", "--noise_multiplier=1"], "cannot load"),
    ("evaluate, directory without a model", "evaluate", ["--model={m}/not_a_model"],
     "not a SavedModel"),
    ("evaluate, text file named model.keras", "evaluate", ["--model={m}/text/model.keras"],
     "cannot load"),
    ("generate, truncated SavedModel", "generate",
     ["--generator={m}/truncated_graph", "--output={out}/synthetic.npz"], "cannot load"),
    ("npz, text images", "train_teacher", ["--data_dir={m}/text_images.npz"], "numeric"),
    ("npz, wrong image shape", "train_teacher", ["--data_dir={m}/wrong_shape.npz"],
     r"shape \(5, 5, 1\)"),
    ("npz, scalar images", "evaluate", ["--data_dir={m}/scalar_images.npz"], "expected images"),
    ("npz, two-dimensional labels", "evaluate", ["--data_dir={m}/two_dim_labels.npz"],
     "expected images"),
    ("npz, labels out of range", "train_teacher", ["--data_dir={m}/labels_out_of_range.npz"],
     r"labels must lie in \[0, 10\)"),
    ("npz, NaN images", "evaluate", ["--data_dir={m}/nan_images.npz"], "finite"),
    ("npz, no images", "train_teacher", ["--data_dir={m}/empty.npz"], "holds no images"),
    ("npz, missing keys", "train_teacher", ["--data_dir={m}/missing_keys.npz"], "has keys"),
    ("npz, truncated", "train_teacher", ["--data_dir={m}/truncated.npz"], "not an .npz archive"),
    ("idx, bad magic number", "train_teacher", ["--data_dir={m}/idx_bad_magic"],
     "not an IDX file"),
    ("idx, truncated images", "train_teacher", ["--data_dir={m}/idx_truncated"], "truncated"),
    ("idx, labels out of range", "train_teacher", ["--data_dir={m}/idx_labels_out_of_range"],
     "labels must lie in"),
]


@pytest.mark.parametrize("name,command,args,pattern", MALFORMED_CASES,
                         ids=[case[0] for case in MALFORMED_CASES])
def test_malformed_files(name, command, args, pattern, malformed, finished_runs,
                         digits_teacher_path):
  del name
  base = {
      "distill": ["--dataset=digits", "--steps=2", "--batch_size=8",
                  f"--output_dir={finished_runs}", "--overwrite"],
      "train_teacher": ["--dataset=digits", "--epochs=1", f"--output_dir={finished_runs}",
                        "--overwrite"],
      "evaluate": ["--dataset=digits", f"--model={digits_teacher_path}"],
      "generate": ["--overwrite"],
  }[command]
  args = [arg.format(m=malformed, out=finished_runs) for arg in args]
  assert_rejected(command, base + args, finished_runs, pattern)


def test_the_same_files_undamaged_load(malformed):
  """The data cases above are rejected for their damage alone."""
  for source in ("whole.npz", "idx_whole"):
    images, labels = data.load("digits", "train", str(malformed / source))
    assert images.shape == (20, 8, 8, 1) and labels.shape == (20,)


# --- Random flag values ------------------------------------------------------------------------

# Text that can be passed as one argument (no NUL, no lone surrogates), any script, any control
# character: paths and enum values as a user might mistype or paste them.
ARGUMENT_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                        max_size=12)
NON_EMPTY_TEXT = ARGUMENT_TEXT.filter(lambda text: text.strip())


def fails_to_parse(parser):
  def check(text):
    try:
      parser.parse(text)
    except (ValueError, TypeError):
      return True
    return False
  return check


NOT_AN_INTEGER = ARGUMENT_TEXT.filter(fails_to_parse(flags.IntegerParser())) | st.sampled_from(
    ["1.5", "1e3", "nan", "inf", ""])
NOT_A_NUMBER = ARGUMENT_TEXT.filter(fails_to_parse(flags.FloatParser())) | st.sampled_from(
    ["1,5", "", "--1"])
NOT_A_BOOL = ARGUMENT_TEXT.filter(fails_to_parse(flags.BooleanParser()))
# Past 32 bits, TensorFlow cannot take them as sizes or counts.
HUGE_INTEGER = st.integers(min_value=2**31, max_value=2**80) | st.integers(max_value=-2**31)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def numbers(values):
  return values.map(str)


BAD_POSITIVE_INT = numbers(st.integers(max_value=0) | HUGE_INTEGER) | NOT_AN_INTEGER
BAD_NON_NEGATIVE_INT = numbers(st.integers(max_value=-1) | HUGE_INTEGER) | NOT_AN_INTEGER
BAD_POSITIVE_FLOAT = numbers(st.floats(max_value=0.0) | NON_FINITE) | NOT_A_NUMBER
BAD_NON_NEGATIVE_FLOAT = numbers(st.floats(max_value=0.0, exclude_max=True) | NON_FINITE) | (
    NOT_A_NUMBER)
BAD_FINITE_FLOAT = numbers(NON_FINITE) | NOT_A_NUMBER
BAD_PROBABILITY = numbers(st.floats(max_value=0.0) | st.floats(min_value=1.0) | NON_FINITE) | (
    NOT_A_NUMBER)


def not_one_of(choices):
  return ARGUMENT_TEXT.filter(lambda text: text not in choices)


def fails_as_input_range(text):
  try:
    teachers.InputRange.parse(text)
  except DpdfdError:
    return True
  return False


BAD_INPUT_RANGE = ARGUMENT_TEXT.filter(fails_as_input_range) | st.sampled_from(
    ["nan,1", "0,inf", "1,1", "-1e308,1e308", "mean=nan/std=1", "mean=0.5/std=0",
     "mean=0.5,0.5/std=1,1"])
ARCHITECTURES = ("lenet5", "small_cnn", "resnet")
SHARED = {
    "dataset": not_one_of(data.DATASETS), "seed": BAD_NON_NEGATIVE_INT,
    "student_width": BAD_NON_NEGATIVE_INT,
}

# Per command: the flags to spoil and values that are wrong for them whatever the other flags.
BAD_VALUES = {
    "distill": dict(
        SHARED, teacher=ARGUMENT_TEXT, teacher_outputs=not_one_of(teachers.OUTPUT_KINDS),
        teacher_input_range=BAD_INPUT_RANGE, epsilon=BAD_POSITIVE_FLOAT, delta=BAD_PROBABILITY,
        noise_multiplier=BAD_NON_NEGATIVE_FLOAT, clip_norm=BAD_POSITIVE_FLOAT,
        batch_size=BAD_POSITIVE_INT, steps=BAD_POSITIVE_INT,
        distillation_loss=not_one_of(("kl", "l1")), temperature=BAD_POSITIVE_FLOAT,
        generator_mode=not_one_of(("student", "teacher", "adversarial")),
        student_steps_per_iteration=BAD_POSITIVE_INT,
        generator_steps_per_iteration=BAD_NON_NEGATIVE_INT,
        generator_warmup_steps=BAD_NON_NEGATIVE_INT, generator_balance_weight=BAD_FINITE_FLOAT,
        input_mixup=NOT_A_BOOL, latent_dim=BAD_POSITIVE_INT, generator_width=BAD_POSITIVE_INT,
        student_architecture=not_one_of(ARCHITECTURES), student_learning_rate=BAD_POSITIVE_FLOAT,
        generator_learning_rate=BAD_POSITIVE_FLOAT,
        jit_compile=not_one_of(("auto", "true", "false")),
        noise_seed=numbers(HUGE_INTEGER) | NOT_AN_INTEGER, steps_per_epoch=BAD_POSITIVE_INT,
        checkpoint_every=BAD_POSITIVE_INT),
    "train_teacher": dict(
        SHARED, data_dir=NON_EMPTY_TEXT, epochs=BAD_POSITIVE_INT,
        teacher_batch_size=BAD_POSITIVE_INT, teacher_learning_rate=BAD_POSITIVE_FLOAT,
        teacher_architecture=not_one_of(ARCHITECTURES), teacher_width=BAD_NON_NEGATIVE_INT),
    "evaluate": dict(
        dataset=SHARED["dataset"], model=ARGUMENT_TEXT, data_dir=NON_EMPTY_TEXT,
        model_outputs=not_one_of(teachers.OUTPUT_KINDS), model_input_range=BAD_INPUT_RANGE,
        split=not_one_of(data.SPLITS)),
    "generate": dict(
        seed=SHARED["seed"], generator=ARGUMENT_TEXT, num_samples=BAD_POSITIVE_INT,
        generate_batch_size=BAD_POSITIVE_INT,
        # Any other path ending in .npz would be a valid output.
        output=NON_EMPTY_TEXT.filter(lambda text: not text.endswith(".npz"))),
}


@st.composite
def spoiled_flags(draw, command):
  """One to three of ``command``'s flags, each set to a value that is wrong for it."""
  names = draw(st.lists(st.sampled_from(sorted(BAD_VALUES[command])), min_size=1, max_size=3,
                        unique=True))
  return {name: draw(BAD_VALUES[command][name]) for name in names}


@pytest.fixture(scope="module")
def exported_generator(tmp_path_factory):
  """A working generator SavedModel (random weights), so that only the spoiled flags are wrong."""
  student = architectures.build_classifier("small_cnn", (8, 8, 1), 10, width=4)
  generator = architectures.build_generator((8, 8, 1), latent_dim=8, width=4)
  return export.export_generator(generator, student,
                                 str(tmp_path_factory.mktemp("generator") / "generator"))


def valid_flags(command, teacher, generator, output_dir):
  """Flags with which ``command`` runs to completion in seconds: the spoiled ones must stop it."""
  return {
      "distill": dict(dataset="digits", teacher=teacher, noise_multiplier="1", steps="2",
                      batch_size="8", generator_warmup_steps="0", output_dir=output_dir,
                      overwrite="true"),
      "train_teacher": dict(dataset="digits", epochs="1", output_dir=output_dir,
                            overwrite="true"),
      "evaluate": dict(dataset="digits", model=teacher),
      "generate": dict(generator=generator, num_samples="4", output=f"{output_dir}/synthetic.npz",
                       overwrite="true"),
  }[command]


def check_random_flags(command, spoiled, teacher, generator, output_dir):
  values = valid_flags(command, teacher, generator, str(output_dir))
  if "epsilon" in spoiled:  # distill takes exactly one of the two
    del values["noise_multiplier"]
  values.update(spoiled)
  assert_rejected(command, [f"--{name}={value}" for name, value in values.items()], output_dir)


# Which fixture holds the model each command reads (None: it reads no model).
MODEL_FIXTURES = {"distill": ("digits_teacher_path", None), "train_teacher": (None, None),
                  "evaluate": ("digits_teacher_path", None),
                  "generate": (None, "exported_generator")}


# A handful of processes per command; derandomized so that every CI run tries the same ones.
@pytest.mark.parametrize("command", sorted(MODEL_FIXTURES))
@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.data())
def test_random_bad_flags(command, choice, request, finished_runs):
  spoiled = choice.draw(spoiled_flags(command))
  model, generator = (request.getfixturevalue(name) if name else None
                      for name in MODEL_FIXTURES[command])
  check_random_flags(command, spoiled, model, generator, finished_runs)
