"""SavedModel export with named serving signatures (loadable by TF Serving and saved_model_cli).

Student: ``serving_default`` takes ``images`` (float32 [None, H, W, C] in [0, 1]) and returns
``probabilities`` and ``classes``; ``logits`` returns ``logits``.
Generator: ``serving_default`` takes ``num_samples`` (int32) and ``seed`` (int64) and returns
``images``, ``labels`` (the student's classes) and ``latents``; ``from_latents`` takes ``latents``
(float32 [None, latent_dim]). Both run the networks in inference mode.

Exports are written to a temporary directory and renamed into place, so a finished export is
never replaced by a partial one.
"""

import os
import shutil
import tempfile

import tensorflow as tf


class StudentModule(tf.Module):

  def __init__(self, student):
    super().__init__(name="student")
    self.student = student
    image_spec = tf.TensorSpec([None] + list(student.input_shape[1:]), tf.float32, name="images")
    self.serve = tf.function(self._serve, input_signature=[image_spec])
    self.logits = tf.function(self._logits, input_signature=[image_spec])

  def _logits(self, images):
    return {"logits": _float32(self.student(images, training=False))}

  def _serve(self, images):
    logits = _float32(self.student(images, training=False))
    return {"probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64)}


class GeneratorModule(tf.Module):

  def __init__(self, generator, student):
    super().__init__(name="generator")
    self.generator = generator
    self.student = student
    self.latent_dim = int(generator.input_shape[-1])
    self.sample = tf.function(self._sample, input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"),
        tf.TensorSpec([], tf.int64, name="seed")])
    self.from_latents = tf.function(self._from_latents, input_signature=[
        tf.TensorSpec([None, self.latent_dim], tf.float32, name="latents")])

  def _from_latents(self, latents):
    images = _float32(self.generator(latents, training=False))
    labels = tf.argmax(self.student(images, training=False), axis=-1, output_type=tf.int64)
    return {"images": images, "labels": labels, "latents": latents}

  def _sample(self, num_samples, seed):
    seed_pair = tf.stack([seed, tf.constant(0, tf.int64)])
    latents = tf.random.stateless_normal(tf.stack([num_samples, self.latent_dim]), seed_pair)
    return self._from_latents(latents)


def _atomic_save(module, path, signatures):
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(prefix=os.path.basename(path) + ".partial-", dir=parent)
  try:
    tf.saved_model.save(module, temporary, signatures=signatures)
    os.chmod(temporary, 0o755)  # mkdtemp makes it private; servers often run as another user
    if os.path.exists(path):
      previous = path + ".previous"
      shutil.rmtree(previous, ignore_errors=True)
      os.replace(path, previous)
      os.replace(temporary, path)
      shutil.rmtree(previous)
    else:
      os.replace(temporary, path)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  return path


def export_student(student, path):
  module = StudentModule(student)
  return _atomic_save(module, path, {"serving_default": module.serve, "logits": module.logits})


def export_generator(generator, student, path):
  module = GeneratorModule(generator, student)
  return _atomic_save(module, path, {"serving_default": module.sample,
                                     "from_latents": module.from_latents})


def _float32(tensor):
  """Signatures return float32 whatever the compute dtype (mixed precision computes in float16)."""
  return tf.cast(tensor, tf.float32)
