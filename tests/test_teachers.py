"""Loading user classifiers: formats, output kinds, input ranges, validation."""

import numpy as np
import pytest
import tensorflow as tf

from dpdfd_tf import architectures
from dpdfd_tf import export
from dpdfd_tf import teachers
from dpdfd_tf._compat import keras
from dpdfd_tf.errors import DpdfdError


def small_model(softmax=False, shape=(8, 8, 1), classes=10):
  keras.utils.set_random_seed(0)
  images = keras.Input(shape, name="images")
  x = keras.layers.Flatten()(images)
  outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
  return keras.Model(images, outputs)


@pytest.mark.parametrize("suffix", ["saved_model", "model.keras", "model.h5"])
@pytest.mark.parametrize("softmax", [False, True])
def test_formats_and_output_kinds_give_the_same_logits_up_to_a_constant(tmp_path, suffix, softmax):
  model = small_model(softmax)
  path = str(tmp_path / suffix)
  model.save(path)
  loaded = teachers.load_classifier(path, (8, 8, 1), 10)
  x = tf.random.uniform([4, 8, 8, 1], seed=1)
  logits = loaded(x).numpy()
  expected = model(x).numpy()
  if softmax:  # log-probabilities: the same softmax
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), expected, rtol=1e-4, atol=1e-6)
  else:
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
  assert not loaded.trainable_weights


def test_plain_saved_model_export_loads_as_probabilities(tmp_path):
  student = architectures.build_classifier("small_cnn", (8, 8, 1), 10, width=4)
  path = export.export_student(student, str(tmp_path / "student"))
  loaded = teachers.load_classifier(path, (8, 8, 1), 10)
  x = tf.random.uniform([3, 8, 8, 1], seed=2)
  np.testing.assert_allclose(tf.nn.softmax(loaded(x)).numpy(), tf.nn.softmax(student(x)).numpy(),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("text,x,expected", [
    ("0,1", 0.25, 0.25), ("-1,1", 0.25, -0.5), ("0,255", 1.0, 255.0),
    ("mean=0.5/std=0.25", 1.0, 2.0)])
def test_input_range_maps_unit_pixels(text, x, expected):
  mapped = teachers.InputRange.parse(text).apply(tf.constant([x]))
  assert float(mapped[0]) == pytest.approx(expected)


def test_teacher_trained_on_minus_one_to_one_sees_mapped_inputs(tmp_path):
  images = keras.Input((2, 2, 1))
  model = keras.Model(images, keras.layers.Flatten()(images))  # echoes its input
  path = str(tmp_path / "echo.keras")
  model.save(path)
  loaded = teachers.load_classifier(path, (2, 2, 1), 4, "logits", teachers.InputRange.parse("-1,1"))
  np.testing.assert_allclose(loaded(tf.fill([1, 2, 2, 1], 0.75)).numpy(), [[0.5] * 4])


@pytest.mark.parametrize("text", ["1,0", "abc", "mean=0.5", "mean=0.5/std=0"])
def test_bad_input_ranges(text):
  with pytest.raises(DpdfdError):
    teachers.InputRange.parse(text)


def test_validation_errors(tmp_path):
  model = small_model(shape=(8, 8, 1), classes=10)
  path = str(tmp_path / "m.keras")
  model.save(path)
  with pytest.raises(DpdfdError, match="outputs but the task has 3 classes"):
    teachers.load_classifier(path, (8, 8, 1), 3)
  with pytest.raises(DpdfdError, match="takes inputs of shape"):
    teachers.load_classifier(path, (28, 28, 1), 10)
  with pytest.raises(DpdfdError, match="not found"):
    teachers.load_classifier(str(tmp_path / "missing"), (8, 8, 1), 10)
  (tmp_path / "text.keras").write_text("not a model")
  with pytest.raises(DpdfdError, match="cannot load"):
    teachers.load_classifier(str(tmp_path / "text.keras"), (8, 8, 1), 10)
  (tmp_path / "dir").mkdir()
  with pytest.raises(DpdfdError, match="not a SavedModel"):
    teachers.load_classifier(str(tmp_path / "dir"), (8, 8, 1), 10)
