"""Reusable Keras callbacks for DPDFD runs: privacy progress, sample grids, checkpoints."""

import json
import logging
import time

import numpy as np

from dpdfd_tf import accounting
from dpdfd_tf.errors import NonFiniteLossError
from dpdfd_tf import visualize
from dpdfd_tf._compat import keras


class PrivacyProgress(keras.callbacks.Callback):
  """Adds ``epsilon`` spent so far to the logs; every ``log_every`` private steps logs one line
  (step, losses, epsilon) and appends it to a JSON-lines metrics file.

  Epsilon is computed from the model's private step counter, never from the plan.
  """

  def __init__(self, delta, log_every=100, metrics_path=None, total_steps=None):
    super().__init__()
    self.delta = delta
    self.log_every = log_every
    self.metrics_path = metrics_path
    self.total_steps = total_steps
    self._epsilon_cache = (None, None)
    self._last_logged = None
    self._start = None

  def epsilon(self):
    steps = int(self.model.private_steps.numpy())
    if self._epsilon_cache[0] != steps:
      self._epsilon_cache = (steps, self.model.epsilon(self.delta, steps))
    return self._epsilon_cache[1]

  def on_train_begin(self, logs=None):
    self._start = time.time()
    self._last_logged = int(self.model.private_steps.numpy())

  def on_train_batch_end(self, batch, logs=None):
    if logs is None:
      return
    steps = int(self.model.private_steps.numpy())
    if steps - self._last_logged >= self.log_every:
      logs["epsilon"] = self.epsilon()
      self._write(steps, logs)

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["epsilon"] = self.epsilon()

  def on_train_end(self, logs=None):
    steps = int(self.model.private_steps.numpy())
    if steps != self._last_logged and logs is not None:
      self._write(steps, dict(logs, epsilon=self.epsilon()))

  def _write(self, steps, logs):
    self._last_logged = steps
    record = {k: float(v) for k, v in logs.items() if np.isscalar(v)}
    record.update(private_steps=steps, elapsed_s=round(time.time() - self._start, 2),
                  epsilon=accounting.format_epsilon(self.epsilon()))
    of_total = f"/{self.total_steps}" if self.total_steps else ""
    values = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                      if isinstance(v, float) and k not in ("epsilon", "elapsed_s"))
    logging.getLogger("dpdfd_tf").info("step %d%s | %s | epsilon %s (delta %g) | %.0fs", steps, of_total, values,
                 record["epsilon"], self.delta, record["elapsed_s"])
    if self.metrics_path:
      with open(self.metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")


class StopOnNonFinite(keras.callbacks.Callback):
  """Raises NonFiniteLossError as soon as a logged value is NaN or Inf.

  Put it first: the callbacks after it (sample grid, checkpoint) then never see the broken step,
  so the last checkpoint is a usable one. The private step counter still includes the step.
  """

  def on_train_batch_end(self, batch, logs=None):
    for name, value in (logs or {}).items():
      if np.isscalar(value) and not np.isfinite(value):
        raise NonFiniteLossError(
            f"{name} became {value} at private step {int(self.model.private_steps.numpy())}; "
            "training stopped (lower the learning rates); the last checkpoint predates it")


class SampleGrid(keras.callbacks.Callback):
  """Refreshes a PNG grid of generated samples, labeled by the student, every ``every`` steps.

  Uses fixed latents (so grids are comparable over time) and inference-mode networks. The labels
  are the student's, never the teacher's: the grid is a released artifact.
  """

  def __init__(self, path, latents, every=200, class_names=None):
    super().__init__()
    self.path = path
    self.latents = latents
    self.every = every
    self.class_names = class_names
    self._last = None

  def draw(self):
    images = self.model.generator(self.latents, training=False)
    labels = np.argmax(self.model.student(images, training=False), axis=-1)
    steps = int(self.model.private_steps.numpy())
    visualize.save_sample_grid(np.asarray(images), labels, self.path, self.class_names,
                               title=f"generator samples, student labels, step {steps}")
    self._last = steps

  def on_train_batch_end(self, batch, logs=None):
    steps = int(self.model.private_steps.numpy())
    if self._last is None or steps - self._last >= self.every:
      self.draw()

  def on_train_end(self, logs=None):
    self.draw()


class Checkpointing(keras.callbacks.Callback):
  """Saves ``manager``'s checkpoint every ``every`` private steps and when training ends.

  The checkpoint holds the private step count, so a resumed run continues the privacy budget.
  """

  def __init__(self, manager, every=200):
    super().__init__()
    self.manager = manager
    self.every = every
    self._last = None

  def on_train_begin(self, logs=None):
    self._last = int(self.model.private_steps.numpy())

  def on_train_batch_end(self, batch, logs=None):
    steps = int(self.model.private_steps.numpy())
    if steps - self._last >= self.every:
      self.save()

  def on_train_end(self, logs=None):
    self.save()

  def save(self):
    steps = int(self.model.private_steps.numpy())
    self.manager.save(checkpoint_number=steps)
    self._last = steps

