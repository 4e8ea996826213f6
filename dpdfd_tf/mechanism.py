"""The DPDFD release mechanism as small pure functions (see docs/privacy.md).

Per training step the only quantity that depends on the private data is the matrix of
per-sample gradients of the distillation loss with respect to the student's logits
(``rows``, shape [B, K]). It is released only after ``privatize_rows``:

1. every row is normalized to norm <= C, whatever the teacher does, and
2. independent Gaussian noise of std ``noise_multiplier * C`` is added to every entry.

Everything computed from the released rows (the student update, generator losses that read
them) is post-processing and costs no privacy.
"""

import dataclasses
import math
import secrets
from typing import Optional

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


# Counters are identical on every replica; a write from replica context keeps the first one's.
_SYNCED = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def synced_counter(name):
  """An int64 step counter that stays identical across tf.distribute replicas."""
  return tf.Variable(0, dtype=tf.int64, name=name, **_SYNCED)


class CounterRandom(tf.Module):
  """A counter-based random stream: draw n is Philox keyed by (seed, n).

  Used instead of ``tf.random.Generator`` because its state is two synced variables: under a
  tf.distribute strategy every replica draws the same numbers (the whole global batch) and takes
  its own slice (``BatchSlice``), so R devices draw exactly what one device draws, and the
  stream is checkpointed with the run. ``seed`` None takes 63 bits of OS entropy.
  """

  def __init__(self, seed: Optional[int] = None, name=None):
    super().__init__(name=name)
    seed = secrets.randbits(63) if seed is None else int(seed)
    self.seed = tf.Variable(seed, dtype=tf.int64, name="seed", **_SYNCED)
    self.draws = tf.Variable(0, dtype=tf.int64, name="draws", **_SYNCED)

  def uniform_full_int(self, shape, dtype=tf.uint32):
    """Uniform integers over the whole range of ``dtype`` (the tf.random.Generator method)."""
    key = tf.stack([self.seed, self.draws])
    self.draws.assign_add(1)
    return tf.random.stateless_uniform(shape, key, minval=None, maxval=None, dtype=dtype,
                                       alg="philox")


@dataclasses.dataclass(frozen=True)
class BatchSlice:
  """This replica's rows [index * B/R, (index + 1) * B/R) of a global batch of B rows.

  Random draws are made for the whole global batch and sliced, so every row gets exactly one
  noise draw of std sigma*C whatever the number of replicas R.
  """
  global_batch: int
  index: object = 0  # int or a scalar tensor (replica id)
  count: int = 1

  @property
  def rows(self):
    return self.global_batch // self.count

  def global_shape(self, shape):
    return tf.concat([[self.global_batch], tf.cast(shape, tf.int32)[1:]], axis=0)

  def take(self, tensor):
    if self.count == 1:
      return tensor
    start = tf.cast(self.index, tf.int32) * self.rows
    return tensor[start:start + self.rows]


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


def _noise_for(rows, noise_multiplier, clip_norm, rng, batch_slice):
  if batch_slice is None:
    return gaussian_noise(tf.shape(rows), noise_multiplier, clip_norm, rng)
  return batch_slice.take(gaussian_noise(batch_slice.global_shape(tf.shape(rows)),
                                         noise_multiplier, clip_norm, rng))


def privatize_rows(rows, clip_norm, noise_multiplier, rng, batch_slice=None):
  """Normalizes each row to norm <= C and adds N(0, (sigma*C)^2) noise per entry.

  Args:
    rows: [B, K] per-sample gradients of the distillation loss w.r.t. the student logits.
    clip_norm: C > 0.
    noise_multiplier: sigma >= 0. sigma = 0 releases the rows unprotected (not private).
    rng: tf.random.Generator or CounterRandom for the noise.
    batch_slice: under tf.distribute, which rows of the global batch ``rows`` are: the noise is
      drawn for the global batch and sliced.

  Returns:
    The released rows, [B, K] float32.
  """
  rows = tf.cast(rows, tf.float32)  # DP arithmetic stays in float32 (mixed precision too).
  normalized = normalize_rows(rows, clip_norm)
  return normalized + _noise_for(normalized, noise_multiplier, clip_norm, rng, batch_slice)


def privatize_ensemble_rows(rows, clip_norm, noise_multiplier, rng, batch_slice=None):
  """Normalizes each teacher's rows to norm <= C, averages over the M teachers, adds noise.

  Args:
    rows: [B, M, K] per-sample gradients of the distillation loss w.r.t. the student logits,
      one row per sample and teacher.
    clip_norm: C > 0.
    noise_multiplier: sigma >= 0; noise std per entry is sigma * C, as for one teacher.
    rng: tf.random.Generator or CounterRandom for the noise.
    batch_slice: as for ``privatize_rows``.

  Privacy meaning: teachers trained on disjoint shards means one record changes one teacher,
  which moves each averaged row by at most 2C/M (the teacher_ensemble unit).

  Returns:
    The released rows, [B, K] float32.
  """
  rows = tf.cast(rows, tf.float32)
  averaged = tf.reduce_mean(normalize_rows(rows, clip_norm), axis=1)
  return averaged + _noise_for(averaged, noise_multiplier, clip_norm, rng, batch_slice)


def sample_teacher(rng, num_teachers):
  """Index of the teacher answering this step, uniform over M, from the secret noise stream.

  Privacy meaning: the teacher_sampled unit's amplification (q = 1/M) holds only if nobody
  learns which teacher answered, so the draw comes from the noise generator.
  """
  # 64 random bits: the modulo bias is below M / 2^64.
  bits = rng.uniform_full_int([], tf.int64)
  return tf.cast(tf.math.floormod(bits, tf.constant(num_teachers, tf.int64)), tf.int32)
