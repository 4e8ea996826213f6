"""Command lines: bad input gets one line, a non-zero exit and no file changed; presets parse."""

import os

import pytest
from absl import flags

from conftest import assert_rejected
from conftest import run_command
from dpdfd_tf import cli
from dpdfd_tf import architectures
from dpdfd_tf._compat import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def finished_run_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("finished")
  (directory / "privacy_report.json").write_text('{"epsilon": 1.0}\n')
  (directory / "student").mkdir()
  (directory / "student" / "saved_model.pb").write_bytes(b"keep me")
  return str(directory)


@pytest.fixture(scope="module")
def wrong_teachers(tmp_path_factory):
  directory = tmp_path_factory.mktemp("wrong")
  three_classes = architectures.build_classifier("small_cnn", (8, 8, 1), 3, width=4)
  three_classes.save(str(directory / "three_classes.keras"))
  big_inputs = architectures.build_classifier("small_cnn", (28, 28, 1), 10, width=4)
  big_inputs.save(str(directory / "big_inputs.keras"))
  (directory / "text.keras").write_text("this is not a model")
  (directory / "not_a_model").mkdir()
  return str(directory)


DISTILL_CASES = [
    ("missing teacher", {"teacher": "{missing}"}, "not found"),
    ("unreadable teacher", {"teacher": "{wrong}/text.keras"}, "cannot load"),
    ("non-model directory", {"teacher": "{wrong}/not_a_model"}, "not a SavedModel"),
    ("wrong class count", {"teacher": "{wrong}/three_classes.keras"}, "3 outputs"),
    ("wrong input shape", {"teacher": "{wrong}/big_inputs.keras"}, "takes inputs of shape"),
    ("epsilon zero", {"epsilon": "0"}, "epsilon must be > 0"),
    ("epsilon negative", {"epsilon": "-1"}, "epsilon must be > 0"),
    ("delta zero", {"delta": "0"}, r"delta must be in \(0, 1\)"),
    ("delta one", {"delta": "1.5"}, r"delta must be in \(0, 1\)"),
    ("clip zero", {"clip_norm": "0"}, "clip_norm must be > 0"),
    ("batch zero", {"batch_size": "0"}, "batch_size must be >= 1"),
    ("steps zero", {"steps": "0"}, "steps must be >= 1"),
    ("unknown dataset", {"dataset": "imagenet"}, "unknown dataset"),
    ("teacher-querying generator with epsilon", {"generator_mode": "adversarial"},
     "no epsilon can be met"),
]


@pytest.mark.parametrize("name,overrides,pattern", DISTILL_CASES, ids=[c[0] for c in DISTILL_CASES])
def test_distill_bad_input(name, overrides, pattern, digits_teacher_path, wrong_teachers,
                           finished_run_dir, tmp_path):
  del name
  values = {"dataset": "digits", "teacher": digits_teacher_path, "epsilon": "10",
            "steps": "2", "batch_size": "8"}
  values.update(overrides)
  values = {k: v.format(missing=str(tmp_path / "missing"), wrong=wrong_teachers)
            for k, v in values.items()}
  assert_rejected("distill", [*(f"--{k}={v}" for k, v in values.items()),
                              f"--output_dir={finished_run_dir}", "--overwrite"],
                  finished_run_dir, pattern)


def test_distill_refuses_a_finished_run_without_overwrite(digits_teacher_path, finished_run_dir):
  assert_rejected("distill", ["--dataset=digits", f"--teacher={digits_teacher_path}",
                              "--epsilon=10", f"--output_dir={finished_run_dir}"],
                  finished_run_dir, "already holds a finished run")


@pytest.mark.parametrize("command,args,pattern", [
    ("train_teacher", ["--dataset=fashion_mnist", "--data_dir={empty}"], "holds no IDX files"),
    ("train_teacher", ["--dataset=svhn"], "unknown dataset"),
    ("train_teacher", ["--dataset=digits", "--epochs=0"], "epochs must be >= 1"),
    ("evaluate", ["--dataset=fashion_mnist", "--model={missing}"], "not found"),
    ("generate", ["--generator={missing}"], "not an exported generator"),
    ("privacy", ["--noise_multiplier=1", "--delta=0"], "delta must be in"),
    ("privacy", ["--noise_multiplier=1", "--target_epsilon=3"], "exactly one"),
])
def test_other_commands_bad_input(command, args, pattern, tmp_path, finished_run_dir):
  (tmp_path / "empty").mkdir()
  args = [a.format(empty=str(tmp_path / "empty"), missing=str(tmp_path / "missing"))
          for a in args]
  extra = [f"--output_dir={finished_run_dir}", "--overwrite"] if command == "train_teacher" else []
  assert_rejected(command, [*args, *extra], finished_run_dir, pattern)


def test_misspelled_flag_in_a_preset_is_still_an_error(tmp_path):
  preset = tmp_path / "typo.cfg"
  preset.write_text("--dataset=digits\n--epoch=3\n")
  result = run_command("train_teacher", f"--flagfile={preset}", f"--output_dir={tmp_path}/t")
  assert result.returncode != 0 and "epoch" in result.stderr


def test_preset_flag_list_matches_the_commands():
  """cli.PRESET_FLAGS must be exactly the flags train_teacher and distill define beyond cli's."""
  from dpdfd_tf import distill  # pylint: disable=g-import-not-at-top,unused-import
  from dpdfd_tf import train_teacher  # pylint: disable=g-import-not-at-top,unused-import
  defined = set()
  for module in ("dpdfd_tf.distill", "dpdfd_tf.train_teacher"):
    defined |= {f.name for f in flags.FLAGS.get_flags_for_module(module)}
  shared = {f.name for f in flags.FLAGS.get_flags_for_module("dpdfd_tf.cli")}
  assert set(cli.PRESET_FLAGS) == defined - shared


@pytest.mark.parametrize("preset", sorted(os.listdir(os.path.join(REPO, "flags"))))
def test_presets_only_name_known_flags(preset):
  from dpdfd_tf import distill  # pylint: disable=g-import-not-at-top,unused-import
  from dpdfd_tf import train_teacher  # pylint: disable=g-import-not-at-top,unused-import
  with open(os.path.join(REPO, "flags", preset)) as f:
    names = [line.strip()[2:].split("=")[0] for line in f if line.strip().startswith("--")]
  assert names and all(name in flags.FLAGS for name in names)
