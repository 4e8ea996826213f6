"""Training and evaluating classifiers: teachers (single, ensembles, DP-SGD) and baselines."""

import math
import secrets

import numpy as np
import tensorflow as tf

from dpdfd_tf._compat import keras
from tensorflow_privacy.privacy.keras_models import dp_keras_model  # after _compat


def train_classifier(model, images, labels, epochs=3, batch_size=128, learning_rate=1e-3,
                     seed=0, verbose=2, callbacks=None):
  """Trains ``model`` (images -> logits) with Adam on cross-entropy. Reads the private data."""
  keras.utils.set_random_seed(seed)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model.fit(images, labels, epochs=epochs, batch_size=batch_size, shuffle=True,
                   verbose=verbose, callbacks=callbacks)


def predict_classes(model, images, batch_size=1024):
  """Argmax predictions of a model returning logits or probabilities."""
  predictions = []
  for start in range(0, len(images), batch_size):
    outputs = model(tf.constant(images[start:start + batch_size]), training=False)
    predictions.append(np.argmax(np.asarray(outputs), axis=-1))
  return np.concatenate(predictions) if predictions else np.zeros([0], np.int64)


def accuracy(model, images, labels, batch_size=1024):
  return float(np.mean(predict_classes(model, images, batch_size) == labels))


def shard_indices(num_records, num_shards, seed=0):
  """[M, N // M] record indices: disjoint shards of a seeded permutation (remainder unused).

  Privacy meaning: each record is in at most one shard, so it influences at most one teacher.
  """
  if not 1 <= num_shards <= num_records:
    raise ValueError(f"cannot split {num_records} records into {num_shards} shards")
  order = np.random.default_rng(seed).permutation(num_records)
  per_shard = num_records // num_shards
  return order[:per_shard * num_shards].reshape(num_shards, per_shard)


def train_ensemble(model, images, labels, epochs=30, batch_size=32, learning_rate=1e-3, seed=0,
                   log_every_epochs=5, log=print):
  """Trains each member of a ``build_teacher_ensemble`` model on its own disjoint shard.

  All M members step together: one batch holds ``batch_size`` records of every shard, and
  the stacked layers apply member m's weights to shard m's rows only. Adam's per-coordinate
  updates keep the members independent. Returns the [M, N // M] shard indices used.
  """
  keras.utils.set_random_seed(seed)
  num_members = model.output_shape[1]
  shards = shard_indices(len(images), num_members, seed)
  features = keras.Model(model.input, model.get_layer("features").output)
  shard_features = tf.constant(
      np.asarray(features.predict(images, batch_size=1024, verbose=0))[shards])  # [M, n, F]
  shard_labels = tf.constant(labels[shards].astype(np.int32))  # [M, n]
  member_layers = [model.get_layer("hidden"), model.get_layer("logits")]
  variables = [v for layer in member_layers for v in layer.trainable_variables]
  optimizer = keras.optimizers.Adam(learning_rate)

  @tf.function
  def step(positions):
    x = tf.transpose(tf.gather(shard_features, positions, axis=1), [1, 0, 2])  # [b, M, F]
    y = tf.transpose(tf.gather(shard_labels, positions, axis=1))  # [b, M]
    with tf.GradientTape() as tape:
      logits = x
      for layer in member_layers:
        logits = layer(logits)
      # Sum over members of each member's mean loss: member m's gradient is its own.
      loss = tf.reduce_sum(tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits), axis=0))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss / num_members

  rng = np.random.default_rng(seed)
  per_shard = shards.shape[1]
  for epoch in range(epochs):
    order = rng.permutation(per_shard)
    for start in range(0, per_shard, batch_size):
      loss = step(tf.constant(order[start:start + batch_size]))
    if log and ((epoch + 1) % log_every_epochs == 0 or epoch + 1 == epochs):
      log(f"epoch {epoch + 1}/{epochs}: mean member loss {float(loss):.4f}")
  return shards


def ensemble_accuracies(model, images, labels, batch_size=1024):
  """(accuracy of the averaged-probability vote, [M] accuracies of the members)."""
  votes, members = [], []
  for start in range(0, len(images), batch_size):
    logits = np.asarray(model(tf.constant(images[start:start + batch_size]), training=False))
    members.append(np.argmax(logits, -1))  # [b, M]
    votes.append(np.argmax(tf.nn.softmax(logits).numpy().mean(1), -1))
  members = np.concatenate(members)
  return (float(np.mean(np.concatenate(votes) == labels)),
          np.mean(members == labels[:, None], axis=0))


def poisson_batch_capacity(dataset_size, batch_size):
  """Fixed padded size for Poisson batches: the mean plus 8 standard deviations.

  A draw above it has probability below 1e-15 per step; ``poisson_batches`` then stops with an
  error rather than truncate the batch (truncation would break the accounting).
  """
  rate = batch_size / dataset_size
  return int(math.ceil(batch_size + 8.0 * math.sqrt(batch_size * (1.0 - rate)))) + 1


def poisson_batches(images, labels, batch_size, steps, seed=None):
  """Yields ``steps`` Poisson-sampled batches padded to a fixed size: (x, y, weights).

  Privacy meaning: each record joins each batch independently with probability q = B/N, which is
  what the dp_sgd accounting (PoissonSampledDpEvent) assumes; shuffled fixed-size batches would
  not match it. Padding rows carry weight 0, so their clipped gradient is 0, and the noisy sum is
  divided by the fixed padded size, a constant: the real batch size is never used. ``seed`` None
  draws the sampling from OS entropy (the sample must stay secret).
  """
  rng = np.random.default_rng(seed)
  count = len(images)
  capacity = poisson_batch_capacity(count, batch_size)
  rate = batch_size / count
  for _ in range(steps):
    chosen = np.flatnonzero(rng.random(count) < rate)
    if len(chosen) > capacity:
      raise RuntimeError(f"Poisson batch of {len(chosen)} exceeds the padded size {capacity}")
    padding = capacity - len(chosen)
    indices = np.concatenate([chosen, np.zeros(padding, np.int64)])
    weights = np.concatenate([np.ones(len(chosen), np.float32), np.zeros(padding, np.float32)])
    yield images[indices], labels[indices].astype(np.int32), weights


def train_dp_classifier(model, images, labels, *, noise_multiplier, clip_norm, batch_size,
                        steps, learning_rate=1e-3, seed=0, sampling_seed=None, verbose=2,
                        callbacks=None):
  """DP-SGD with tensorflow-privacy's DPModel: per-example clipping to ``clip_norm``, Gaussian
  noise of std ``noise_multiplier * clip_norm`` on the sum, Poisson-sampled batches.

  Trains ``model``'s weights in place (through a DPModel sharing its layers) and returns it: a
  plain Keras model that saves and loads without tensorflow-privacy. Accounted by the dp_sgd unit
  with q = batch_size / len(images). Why DPModel: on 2 CPU cores it ran a small CNN step at
  B = 256 in 0.5-1 s, while the vectorized DP Keras optimizers took over 15 s (measured).
  The noise is seeded from OS entropy, never from ``seed`` (which only fixes the initial
  weights): a noise seed known to anyone would let them remove the noise.
  """
  dp_model_class = dp_keras_model.make_dp_model_class(keras.Model)
  dp_model = dp_model_class(inputs=model.inputs, outputs=model.outputs,
                            l2_norm_clip=clip_norm, noise_multiplier=noise_multiplier,
                            name=model.name)
  # No metrics: DPModel updates them without the sample weights, so padding rows would count.
  dp_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  del seed  # the weights were initialized by the caller
  tf.random.set_seed(secrets.randbits(31))  # tensorflow-privacy draws noise from tf.random
  capacity = poisson_batch_capacity(len(images), batch_size)
  spec = (tf.TensorSpec((capacity,) + images.shape[1:], tf.float32),
          tf.TensorSpec((capacity,), tf.int32), tf.TensorSpec((capacity,), tf.float32))
  batches = tf.data.Dataset.from_generator(
      lambda: poisson_batches(images, labels, batch_size, steps, sampling_seed),
      output_signature=spec).prefetch(2)
  steps_per_epoch = len(images) // batch_size  # an "epoch" here is N/B expected records
  if steps % steps_per_epoch:
    steps_per_epoch = steps
  dp_model.fit(batches, epochs=math.ceil(steps / steps_per_epoch), steps_per_epoch=steps_per_epoch,
               verbose=verbose, callbacks=callbacks)
  return model
