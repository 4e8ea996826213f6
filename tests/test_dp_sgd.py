"""DP-SGD for teachers and baselines: Poisson batches, zero-weight padding, tensorflow-privacy."""

import numpy as np
import pytest

import dpdfd_tf  # noqa: F401  (import-order workarounds first)
from dpdfd_tf import classification
from dpdfd_tf._compat import keras
from tensorflow_privacy.privacy.keras_models import dp_keras_model


def test_poisson_batches_have_a_fixed_size_and_the_sampling_rate():
  images = np.arange(2000, dtype=np.float32).reshape(2000, 1, 1, 1)
  labels = np.arange(2000) % 10
  capacity = classification.poisson_batch_capacity(2000, 50)
  sizes, seen = [], np.zeros(2000)
  for x, y, w in classification.poisson_batches(images, labels, 50, 400, seed=0):
    assert x.shape == (capacity, 1, 1, 1) and y.shape == w.shape == (capacity,)
    real = w > 0
    sizes.append(real.sum())
    members = x[real, 0, 0, 0].astype(int)
    assert len(set(members)) == len(members)  # each record at most once per batch
    np.testing.assert_array_equal(y[real], members % 10)
    seen[members] += 1
  # Batch sizes are Binomial(N, q): mean B, variance B (1 - q); each record joins with rate q.
  assert abs(np.mean(sizes) - 50) < 3 * np.sqrt(50 / 400)
  assert np.var(sizes) == pytest.approx(50 * (1 - 50 / 2000), rel=0.25)
  assert np.mean(seen) / 400 == pytest.approx(50 / 2000, rel=0.05)


def dp_step_weights(x, y, weights):
  keras.utils.set_random_seed(0)
  inputs = keras.Input((4,))
  model = dp_keras_model.make_dp_model_class(keras.Model)(
      inputs=inputs, outputs=keras.layers.Dense(3)(inputs), l2_norm_clip=100.0,
      noise_multiplier=0.0)
  model.compile(optimizer=keras.optimizers.SGD(1.0),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.train_on_batch(x, y, sample_weight=weights)
  return model.get_weights()[0]


def test_zero_weight_padding_rows_contribute_nothing_to_the_dp_update():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 4)).astype(np.float32)
  y = np.array([0, 1, 2])
  padded = np.array([1, 1, 0], np.float32)
  other = x.copy()
  other[2] = 10 * rng.normal(size=4)  # anything may sit in a padding row
  np.testing.assert_array_equal(dp_step_weights(x, y, padded),
                                dp_step_weights(other, np.array([0, 1, 0]), padded))
  # Positive control: with weight 1 the same row does move the update.
  assert np.abs(dp_step_weights(x, y, padded) - dp_step_weights(x, y, np.ones(3, np.float32))
                ).max() > 1e-3
