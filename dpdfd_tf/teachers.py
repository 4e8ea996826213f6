"""Loading classifiers (teachers, students) from disk as Keras models on [0, 1] images.

Accepted: a Keras SavedModel directory, a ``.keras`` or ``.h5`` file, a plain TensorFlow
SavedModel with a ``serving_default`` signature (e.g. an exported dpdfd_tf student). Outputs may
be logits or probabilities (declared or detected); probabilities are turned into logits with
log(p), which is the same softmax. The model's own input range is declared by an ``InputRange``
and applied to the package's [0, 1] images, so any architecture and preprocessing works.
"""

import dataclasses
import math
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from dpdfd_tf import architectures  # noqa: F401  (registers StackedDense for loading)
from dpdfd_tf._compat import keras
from dpdfd_tf.errors import DpdfdError

OUTPUT_KINDS = ("auto", "logits", "probabilities")


@dataclasses.dataclass(frozen=True)
class InputRange:
  """Maps [0, 1] images to a model's input range: ``(x * scale_to_unit... )``.

  Either an interval [low, high] (x -> low + (high - low) * x), or a per-channel mean/std
  normalization of [0, 1] pixels ((x - mean) / std).
  """
  low: float = 0.0
  high: float = 1.0
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None

  @classmethod
  def parse(cls, text: str) -> "InputRange":
    """'0,1', '-1,1', '0,255' or 'mean=0.286/std=0.353' (comma-separated per channel)."""
    text = text.strip()
    try:
      if text.startswith("mean="):
        mean_text, std_text = text.split("/")
        mean = tuple(float(v) for v in mean_text[len("mean="):].split(","))
        std = tuple(float(v) for v in std_text.strip()[len("std="):].split(","))
        if len(mean) != len(std) or any(s <= 0 for s in std) or not _all_finite(mean + std):
          raise ValueError
        return cls(mean=mean, std=std)
      low, high = (float(v) for v in text.split(","))
      if not _all_finite((low, high, high - low)):
        raise ValueError
    except ValueError:
      raise DpdfdError(f"cannot parse input range {text!r}; use finite numbers as in '0,1', "
                       "'-1,1' or 'mean=0.5/std=0.5'") from None
    if not high > low:
      raise DpdfdError(f"input range {text!r} needs low < high")
    return cls(low=low, high=high)

  @property
  def is_identity(self):
    return self.mean is None and self.low == 0.0 and self.high == 1.0

  def apply(self, images):
    if self.mean is not None:
      return (images - tf.constant(self.mean, images.dtype)) / tf.constant(self.std, images.dtype)
    return self.low + (self.high - self.low) * images


def _all_finite(values):
  return all(math.isfinite(v) for v in values)


class _InputRangeLayer(keras.layers.Layer):

  def __init__(self, input_range, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.input_range = input_range

  def call(self, images):
    return self.input_range.apply(images)


class _SignatureLayer(keras.layers.Layer):
  """Calls one output of a plain SavedModel signature (not trainable)."""

  def __init__(self, loaded, signature, input_key, output_key, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self._loaded = loaded  # keeps the variables alive
    self._signature = signature
    self._input_key = input_key
    self._output_key = output_key

  def call(self, images):
    return self._signature(**{self._input_key: images})[self._output_key]


class _LogLayer(keras.layers.Layer):

  def call(self, probabilities):
    return tf.math.log(tf.maximum(probabilities, 1e-12))


def _load_raw(path):
  """Returns (callable model, input shape, output kind hint)."""
  if not os.path.exists(path):
    raise DpdfdError(f"model not found: {path}")
  is_dir = os.path.isdir(path)
  if is_dir and not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise DpdfdError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
  if not is_dir and not path.endswith((".keras", ".h5", ".hdf5")):
    raise DpdfdError(f"{path}: expected a SavedModel directory, a .keras or an .h5 file")
  if is_dir and os.path.isfile(os.path.join(path, "keras_metadata.pb")) or not is_dir:
    try:
      model = keras.models.load_model(path, compile=False)
    except Exception as e:  # pylint: disable=broad-except
      raise DpdfdError(f"cannot load Keras model {path}: {_first_line(e)}") from None
    hint = None
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
      hint = "probabilities"
    return model, tuple(model.input_shape[1:]), hint
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DpdfdError(f"cannot load SavedModel {path}: {_first_line(e)}") from None
  signature = loaded.signatures.get("serving_default")
  if signature is None:
    raise DpdfdError(f"SavedModel {path} has no serving_default signature")
  inputs = signature.structured_input_signature[1]
  if len(inputs) != 1:
    raise DpdfdError(f"SavedModel {path}: serving_default must take one image input, "
                     f"takes {sorted(inputs)}")
  input_key, spec = next(iter(inputs.items()))
  outputs = signature.structured_outputs
  for output_key, hint in (("logits", "logits"), ("probabilities", "probabilities")):
    if output_key in outputs:
      break
  else:
    float_outputs = [k for k, v in outputs.items() if v.dtype.is_floating]
    if len(float_outputs) != 1:
      raise DpdfdError(f"SavedModel {path}: cannot tell which output holds the class scores "
                       f"({sorted(outputs)})")
    output_key, hint = float_outputs[0], None
  layer = _SignatureLayer(loaded, signature, input_key, output_key)
  return layer, tuple(spec.shape[1:]), hint


def _first_line(error):
  text = str(error).strip().splitlines()
  return text[0][:300] if text else type(error).__name__


def _detect_output_kind(model, input_shape):
  """Probes the model on random [0, 1] images: rows in [0, 1] summing to 1 are probabilities.

  The answer depends on the architecture (a softmax head), not on what the model learned; pass
  the output kind explicitly to avoid even this probe.
  """
  probe = tf.random.stateless_uniform((8,) + tuple(input_shape), seed=(0, 0))
  outputs = np.asarray(model(probe, training=False))
  if outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.allclose(outputs.sum(-1), 1.0,
                                                                        atol=1e-3):
    return "probabilities"
  return "logits"


def load_classifier(path, image_shape=None, num_classes=None, output_kind="auto",
                    input_range: Optional[InputRange] = None, name="teacher"):
  """Loads a classifier as a frozen Keras model mapping [0, 1] images to logits.

  Args:
    path: SavedModel directory, .keras or .h5 file.
    image_shape: expected (H, W, C); checked against the model's input.
    num_classes: expected number of outputs; checked.
    output_kind: 'logits', 'probabilities' or 'auto' (architecture, then a probe on random input).
    input_range: the range the model was trained on; None means [0, 1].
    name: name of the returned model.

  Raises:
    DpdfdError: unreadable file, wrong input shape or number of classes.
  """
  if output_kind not in OUTPUT_KINDS:
    raise DpdfdError(f"unknown output kind {output_kind!r}; expected one of {OUTPUT_KINDS}")
  raw, model_shape, hint = _load_raw(path)
  if image_shape is None:
    if any(d is None for d in model_shape):
      raise DpdfdError(f"{path}: input shape {model_shape} is not fully defined")
    image_shape = model_shape
  image_shape = tuple(image_shape)
  if input_range is not None and input_range.mean is not None and len(input_range.mean) not in (
      1, image_shape[-1]):
    raise DpdfdError(f"input range has {len(input_range.mean)} channel means for images with "
                     f"{image_shape[-1]} channels")
  if len(model_shape) != len(image_shape) or any(
      m is not None and m != e for m, e in zip(model_shape, image_shape)):
    raise DpdfdError(f"{path} takes inputs of shape {model_shape}, but the images are "
                     f"{image_shape}")
  if output_kind == "auto":
    output_kind = hint or _detect_output_kind(_wrap(raw, image_shape, input_range), image_shape)
  model = _wrap(raw, image_shape, input_range, take_log=output_kind == "probabilities", name=name)
  outputs = model.output_shape[-1]
  if num_classes is not None and outputs != num_classes:
    raise DpdfdError(f"{path} has {outputs} outputs but the task has {num_classes} classes")
  model.trainable = False
  return model


def _wrap(raw, image_shape, input_range, take_log=False, name="classifier"):
  images = keras.Input(image_shape, name="images")
  x = images
  if input_range is not None and not input_range.is_identity:
    x = _InputRangeLayer(input_range)(x)
  x = raw(x, training=False) if isinstance(raw, keras.Model) else raw(x)
  if take_log:
    x = _LogLayer()(x)
  return keras.Model(images, x, name=name)
