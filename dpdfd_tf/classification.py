"""Training and evaluating ordinary (non-private) classifiers: teachers and baselines."""

import numpy as np
import tensorflow as tf

from dpdfd_tf._compat import keras


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
