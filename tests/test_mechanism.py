"""The release mechanism: row normalization and noise (docs/privacy.md, steps 4-5)."""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
from scipy import stats
import pytest
import tensorflow as tf

import dpdfd_tf  # noqa: F401  (import-order workarounds first)
from dpdfd_tf import architectures
from dpdfd_tf import losses
from dpdfd_tf import mechanism

finite_rows = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.floats(-1e6, 1e6, width=32))


@settings(max_examples=200, deadline=None)
@given(rows=finite_rows, clip_norm=st.floats(1e-3, 1e3))
def test_normalized_rows_have_norm_at_most_clip(rows, clip_norm):
  normalized = mechanism.normalize_rows(rows, clip_norm).numpy()
  norms = np.linalg.norm(normalized.astype(np.float64), axis=1)
  assert np.all(norms <= clip_norm * (1 + 1e-5))
  assert np.all(np.isfinite(normalized))


def test_normalization_keeps_direction_and_scales_to_clip():
  rows = np.array([[3.0, 4.0], [0.0, 0.0], [-6.0, 8.0]], np.float32)
  normalized = mechanism.normalize_rows(rows, 2.0, gamma=0.0 + 1e-12).numpy()
  # ||(3, 4)|| = 5 -> 2 * (3, 4) / 5; ||(-6, 8)|| = 10 -> 2 * (-6, 8) / 10.
  np.testing.assert_allclose(normalized[0], [1.2, 1.6], rtol=1e-6)
  np.testing.assert_allclose(normalized[2], [-1.2, 1.6], rtol=1e-6)
  np.testing.assert_array_equal(normalized[1], [0.0, 0.0])


def test_zero_noise_releases_normalized_rows_exactly():
  rows = tf.constant([[1.0, -2.0, 2.0]])
  released = mechanism.privatize_rows(rows, 1.5, 0.0, tf.random.Generator.from_seed(0))
  np.testing.assert_allclose(released.numpy(), mechanism.normalize_rows(rows, 1.5).numpy())


@pytest.mark.parametrize("noise_multiplier,clip_norm", [(0.5, 1.0), (2.0, 0.25), (10.0, 3.0)])
def test_noise_std_is_sigma_times_clip(noise_multiplier, clip_norm):
  rows = tf.zeros([2000, 50])  # zero rows stay zero after normalization: what is left is noise
  released = mechanism.privatize_rows(rows, clip_norm, noise_multiplier,
                                      tf.random.Generator.from_seed(1)).numpy()
  expected = noise_multiplier * clip_norm
  # 100,000 draws: the sample std is within 1% of the truth with overwhelming probability.
  assert abs(released.std() - expected) < 0.01 * expected
  assert abs(released.mean()) < 0.02 * expected
  # Independent entries: the correlation of neighbouring coordinates is near zero.
  assert abs(np.corrcoef(released[:, 0], released[:, 1])[0, 1]) < 0.1


def test_standard_normal_is_standard_and_identical_under_xla():
  plain = tf.function(lambda rng: mechanism.standard_normal(rng, [401, 251]))
  compiled = tf.function(lambda rng: mechanism.standard_normal(rng, [401, 251]),
                         jit_compile=True)
  a = plain(tf.random.Generator.from_seed(3)).numpy()
  b = compiled(tf.random.Generator.from_seed(3)).numpy()
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  assert a.shape == (401, 251)
  assert abs(a.mean()) < 0.01 and abs(a.std() - 1.0) < 0.01
  # Gaussian tails: P(|x| > 3) = 0.0027 (100,651 draws -> about 272).
  assert 200 < np.sum(np.abs(a) > 3) < 350


@pytest.mark.parametrize("loss", ["kl", "l1"])
def test_swapping_one_ensemble_member_moves_each_row_by_at_most_2c_over_m(loss):
  num_teachers, clip = 8, 0.7
  ensemble = architectures.build_teacher_ensemble("ensemble_mlp", (8, 8, 1), 10, num_teachers,
                                                  width=16)
  images = tf.random.stateless_uniform([64, 8, 8, 1], seed=(1, 2))
  student_logits = tf.random.stateless_normal([64, 10], seed=(3, 4))
  zero_noise = tf.random.Generator.from_seed(0)

  def released_rows(model):
    rows = losses.distillation_rows(loss, student_logits, model(images))
    return mechanism.privatize_ensemble_rows(rows, clip, 0.0, zero_noise).numpy()

  before = released_rows(ensemble)
  largest = 0.0
  for trial in range(5):  # member 3 replaced by differently trained (here: random) weights
    swapped = [w.copy() for w in ensemble.get_weights()]
    for w in swapped:
      if w.ndim >= 2 and w.shape[0] == num_teachers:
        w[3] = np.random.default_rng(trial).normal(0, 3, w.shape[1:])
    other = architectures.build_teacher_ensemble("ensemble_mlp", (8, 8, 1), 10, num_teachers,
                                                 width=16)
    other.set_weights(swapped)
    change = np.linalg.norm(released_rows(other) - before, axis=1).max()
    largest = max(largest, change)
  assert largest <= 2 * clip / num_teachers + 1e-6
  assert largest > 0.5 * clip / num_teachers  # the swap does move rows: the check has teeth


def test_sampled_teacher_is_uniform_and_from_the_given_generator():
  rng = tf.random.Generator.from_seed(5)
  draws = np.array([int(mechanism.sample_teacher(rng, 7)) for _ in range(3500)])
  counts = np.bincount(draws, minlength=7)
  assert counts.sum() == 3500 and draws.min() >= 0 and draws.max() < 7
  assert stats.chisquare(counts).pvalue > 1e-3
  again = tf.random.Generator.from_seed(5)
  assert [int(mechanism.sample_teacher(again, 7)) for _ in range(20)] == list(draws[:20])
