"""The DPDFD release mechanism as small pure functions (see docs/privacy.md).

Per training step the only quantity that depends on the private data is the matrix of
per-sample gradients of the distillation loss with respect to the student's logits
(``rows``, shape [B, K]). It is released only after ``privatize_rows``:

1. every row is normalized to norm <= C, whatever the teacher does, and
2. independent Gaussian noise of std ``noise_multiplier * C`` is added to every entry.

Everything computed from the released rows (the student update, generator losses that read
them) is post-processing and costs no privacy.
"""

import math

import tensorflow as tf

# Added to the row norm so that an all-zero row stays finite; it only shrinks norms.
NORMALIZATION_EPSILON = 1e-6


def normalize_rows(rows, clip_norm, gamma=NORMALIZATION_EPSILON):
  """Returns ``clip_norm * g / (||g||_2 + gamma)`` row by row.

  Privacy meaning: bounds each row's L2 norm by ``clip_norm`` (C), so one changed teacher
  moves each row by at most 2C. Norms are summed by hand (``tf.linalg.norm`` is fine here, but
  hand-written squares vectorize cleanly inside ``tf.vectorized_map`` and XLA).
  """
  rows = tf.convert_to_tensor(rows)
  norms = tf.sqrt(tf.reduce_sum(tf.square(rows), axis=-1, keepdims=True))
  return rows * (tf.cast(clip_norm, rows.dtype) / (norms + tf.cast(gamma, rows.dtype)))


def standard_normal(rng, shape, dtype=tf.float32):
  """N(0, 1) samples from ``rng``'s raw bits, by Box-Muller in float64 with 53-bit uniforms.

  Why not ``rng.normal``: under XLA it turns the same bits into different numbers than the
  TensorFlow kernel, so compiled and plain runs would diverge; the raw bits agree. Float64 with
  53-bit uniforms also keeps the Gaussian tails out to about 8.6 standard deviations (a float32
  sampler stops near 5.9).
  """
  shape = tf.convert_to_tensor(shape, tf.int32)
  count = tf.reduce_prod(shape)
  pairs = (count + 1) // 2
  bits = tf.cast(rng.uniform_full_int(tf.stack([4, pairs]), tf.uint32), tf.float64)
  # 53-bit integers from 27 + 26 high bits of two words, mapped into the open interval (0, 1).
  def uniform(high, low):
    return (tf.floor(high / 32.0) * 67108864.0 + tf.floor(low / 64.0) + 0.5) / 2.0**53
  radius = tf.sqrt(-2.0 * tf.math.log(uniform(bits[0], bits[1])))
  angle = 2.0 * math.pi * uniform(bits[2], bits[3])
  samples = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)[:count]
  return tf.cast(tf.reshape(samples, shape), dtype)


def uniform(rng, shape, dtype=tf.float32):
  """U[0, 1) samples from ``rng``'s raw bits (identical with and without XLA)."""
  bits = rng.uniform_full_int(shape, tf.uint32)
  return tf.cast(tf.cast(bits, tf.float64) / 2.0**32, dtype)


def gaussian_noise(shape, noise_multiplier, clip_norm, rng, dtype=tf.float32):
  """Noise N(0, (noise_multiplier * clip_norm)^2) per entry, drawn from ``rng``.

  ``rng`` is a ``tf.random.Generator`` so the noise stream is checkpointed with the run.
  """
  std = tf.cast(noise_multiplier, dtype) * tf.cast(clip_norm, dtype)
  return standard_normal(rng, shape, dtype) * std


def privatize_rows(rows, clip_norm, noise_multiplier, rng):
  """Normalizes each row to norm <= C and adds N(0, (sigma*C)^2) noise per entry.

  Args:
    rows: [B, K] per-sample gradients of the distillation loss w.r.t. the student logits.
    clip_norm: C > 0.
    noise_multiplier: sigma >= 0. sigma = 0 releases the rows unprotected (not private).
    rng: tf.random.Generator for the noise.

  Returns:
    The released rows, [B, K] float32.
  """
  rows = tf.cast(rows, tf.float32)  # DP arithmetic stays in float32 (mixed precision too).
  normalized = normalize_rows(rows, clip_norm)
  return normalized + gaussian_noise(tf.shape(normalized), noise_multiplier, clip_norm, rng)


def privatize_ensemble_rows(rows, clip_norm, noise_multiplier, rng):
  """Normalizes each teacher's rows to norm <= C, averages over the M teachers, adds noise.

  Args:
    rows: [B, M, K] per-sample gradients of the distillation loss w.r.t. the student logits,
      one row per sample and teacher.
    clip_norm: C > 0.
    noise_multiplier: sigma >= 0; noise std per entry is sigma * C, as for one teacher.
    rng: tf.random.Generator for the noise.

  Privacy meaning: teachers trained on disjoint shards means one record changes one teacher,
  which moves each averaged row by at most 2C/M (the teacher_ensemble unit).

  Returns:
    The released rows, [B, K] float32.
  """
  rows = tf.cast(rows, tf.float32)
  averaged = tf.reduce_mean(normalize_rows(rows, clip_norm), axis=1)
  return averaged + gaussian_noise(tf.shape(averaged), noise_multiplier, clip_norm, rng)


def sample_teacher(rng, num_teachers):
  """Index of the teacher answering this step, uniform over M, from the secret noise stream.

  Privacy meaning: the teacher_sampled unit's amplification (q = 1/M) holds only if nobody
  learns which teacher answered, so the draw comes from the noise generator.
  """
  # 64 random bits: the modulo bias is below M / 2^64.
  bits = rng.uniform_full_int([], tf.int64)
  return tf.cast(tf.math.floormod(bits, tf.constant(num_teachers, tf.int64)), tf.int32)
