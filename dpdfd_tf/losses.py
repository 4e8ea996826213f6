"""Distillation and generator losses.

Distillation losses are per sample (shape [B]) so that the gradient of their sum with respect
to the student logits has one row per sample: row i depends only on sample i.
"""

import tensorflow as tf

DISTILLATION_LOSSES = ("kl", "l1")


def per_sample_distillation_loss(name, student_logits, teacher_logits, temperature=1.0):
  """[B] losses. ``kl``: temperature^2 * KL(softmax(t/T) || softmax(s/T)); ``l1``: mean |s - t|."""
  if name == "kl":
    teacher_probs = tf.nn.softmax(teacher_logits / temperature)
    log_ratio = (tf.nn.log_softmax(teacher_logits / temperature)
                 - tf.nn.log_softmax(student_logits / temperature))
    return temperature**2 * tf.reduce_sum(teacher_probs * log_ratio, axis=-1)
  if name == "l1":
    return tf.reduce_mean(tf.abs(student_logits - teacher_logits), axis=-1)
  raise ValueError(f"unknown distillation loss {name!r}; expected one of {DISTILLATION_LOSSES}")


def distillation_rows(name, student_logits, teacher_logits, temperature=1.0):
  """Per-sample gradients d loss_i / d s_i, [B, K]: the private quantity DPDFD releases.

  With an ensemble's [B, M, K] teacher logits, one row per sample and teacher: [B, M, K].
  """
  student_logits = tf.convert_to_tensor(student_logits)
  teacher_logits = tf.convert_to_tensor(teacher_logits)
  if teacher_logits.shape.rank == 3:
    student_logits = tf.broadcast_to(student_logits[:, None, :], tf.shape(teacher_logits))
  with tf.GradientTape() as tape:
    tape.watch(student_logits)
    total = tf.reduce_sum(per_sample_distillation_loss(name, student_logits,
                                                       tf.stop_gradient(teacher_logits),
                                                       temperature))
  return tape.gradient(total, student_logits)


def confidence_loss(logits):
  """One-hot term: cross-entropy of the model's outputs against its own argmax."""
  pseudo_labels = tf.stop_gradient(tf.argmax(logits, axis=-1))
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=pseudo_labels, logits=logits))


def balance_loss(logits):
  """Information-entropy term: negative entropy of the batch-mean prediction (min: balanced)."""
  mean_probs = tf.reduce_mean(tf.nn.softmax(logits), axis=0)
  return tf.reduce_sum(mean_probs * tf.math.log(mean_probs + 1e-8))


def batch_entropy(logits):
  """Entropy (nats) of the batch-mean prediction: log(K) when balanced, 0 when collapsed."""
  return -balance_loss(logits)


def diversity_loss(values):
  """Negative mean pairwise L2 distance between the rows of ``values`` (flattened), per unit.

  Computed through the Gram matrix (one matmul), not a [B, B, D] difference tensor.
  """
  flat = tf.reshape(values, [tf.shape(values)[0], -1])
  squared = tf.reduce_sum(tf.square(flat), axis=1)
  distances2 = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(flat, flat, transpose_b=True)
  distances = tf.sqrt(tf.maximum(distances2, 0.0) + 1e-8)
  size = tf.cast(tf.shape(flat)[1], flat.dtype)
  return -tf.reduce_mean(distances) / tf.sqrt(size)


def coarse_image_diversity_loss(images, grid=4):
  """Diversity of images average-pooled to a ``grid`` x ``grid`` layout.

  Pixel-level diversity is maximized by saturated noise, which any classifier puts in one class;
  diversity of the coarse layout makes the generator vary shapes instead (measured: after 300
  warm-up steps a Fashion-MNIST teacher put noise-like samples 99% in one class, coarse ones in
  all ten).
  """
  height, width = images.shape[1], images.shape[2]
  pool = (max(1, height // grid), max(1, width // grid))
  return diversity_loss(tf.nn.avg_pool2d(images, pool, pool, "VALID"))


def released_rows_loss(released_rows, student_logits, clip_norm):
  """Adversarial term on the released (noisy) rows: -mean <stop_grad(g~_i), s_i> / C.

  Moving s_i along g~_i increases the student's distillation loss, so minimizing this loss makes
  the generator seek samples the student has not learned yet. Only released rows are read:
  post-processing, free in privacy.
  """
  rows = tf.stop_gradient(released_rows)
  return -tf.reduce_mean(tf.reduce_sum(rows * student_logits, axis=-1)) / clip_norm


def discrepancy_loss(name, student_logits, teacher_logits, temperature=1.0):
  """DFAD generator loss: minus the batch mean of the distillation loss the student minimizes.

  The generator must seek inputs where the student is far from the teacher in the student's own
  loss. With ``l1`` this is DFAD's mean L1 logit distance. Maximizing L1 against a KL student
  instead lets the generator chase logit offsets that KL ignores (softmax is shift-invariant), and
  the student collapsed to chance in the benchmark.
  """
  return -tf.reduce_mean(per_sample_distillation_loss(name, student_logits, teacher_logits,
                                                      temperature))
