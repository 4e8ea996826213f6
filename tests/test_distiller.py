"""The DPDFD Keras model: one step against a hand-derived update, privacy status, budget, resume."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dpdfd_tf import distiller
from dpdfd_tf import errors
from dpdfd_tf import mechanism
from dpdfd_tf._compat import keras

IMAGE_SHAPE = (4, 4, 1)
LATENT_DIM = 3
NUM_CLASSES = 3


class CallRecorder(keras.layers.Layer):
  """Identity layer that records every eager call: lets tests see who calls the teacher."""

  def __init__(self, calls, **kwargs):
    super().__init__(**kwargs)
    self.calls = calls

  def call(self, inputs):
    self.calls.append(1)
    return inputs


def linear_models(seed=0, teacher_calls=None):
  """A linear generator (latents -> 4x4 image), linear teacher and linear student."""
  keras.utils.set_random_seed(seed)
  latents = keras.Input((LATENT_DIM,), name="latents")
  generator = keras.Model(latents, keras.layers.Reshape(IMAGE_SHAPE)(
      keras.layers.Dense(16, use_bias=False)(latents)), name="generator")

  def classifier(name, recorder=None):
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = keras.layers.Flatten()(images)
    if recorder is not None:
      x = recorder(x)
    return keras.Model(images, keras.layers.Dense(NUM_CLASSES, name="logits")(x), name=name)

  recorder = CallRecorder(teacher_calls) if teacher_calls is not None else None
  return classifier("teacher", recorder), classifier("student"), generator


def make_model(noise_multiplier=0.0, batch_size=5, clip_norm=0.5, generator_steps=0,
               learning_rate=0.1, jit_compile=False, seed=0, input_mixup=False, **kwargs):
  teacher, student, generator = linear_models(seed)
  model = distiller.DPDFD(teacher, student, generator, batch_size=batch_size,
                          clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                          generator_steps_per_iteration=generator_steps, seed=11, noise_seed=22,
                          input_mixup=input_mixup, **kwargs)
  model.compile(student_optimizer=keras.optimizers.SGD(learning_rate),
                generator_optimizer=keras.optimizers.SGD(learning_rate), jit_compile=jit_compile)
  return model


def softmax(x):
  e = np.exp(x - x.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("noise_multiplier", [0.0, 0.7])
@pytest.mark.parametrize("loss", ["kl", "l1"])
@pytest.mark.parametrize("mixup", [False, True])
def test_one_student_step_matches_hand_derived_update(noise_multiplier, loss, mixup):
  batch, clip, lr = 5, 0.5, 0.1
  model = make_model(noise_multiplier, batch, clip, learning_rate=lr, distillation_loss=loss,
                     max_private_steps=1, input_mixup=mixup)
  w_g = model.generator.get_weights()[0]
  w_t, b_t = model.teacher.get_weights()
  w_s, b_s = model.student.get_weights()
  # The model draws its latents and noise from generators seeded 11 and 22: replay them.
  latent_rng = tf.random.Generator.from_seed(11)
  latents = mechanism.standard_normal(latent_rng, [batch, LATENT_DIM]).numpy()
  mix = mechanism.uniform(latent_rng, [batch, 1]).numpy()
  noise = mechanism.standard_normal(tf.random.Generator.from_seed(22),
                                    [batch, NUM_CLASSES]).numpy()

  model.fit(steps_per_epoch=1, epochs=1, verbose=0)

  # Hand derivation. x = z W_g (mixed with its neighbour: w x_i + (1 - w) x_{i-1}, if mixup);
  # s = x W_s + b_s; t = x W_t + b_t.
  x = latents @ w_g
  if mixup:
    x = mix * x + (1 - mix) * np.roll(x, 1, axis=0)
  s, t = x @ w_s + b_s, x @ w_t + b_t
  # KL(softmax t || softmax s): d/ds = softmax(s) - softmax(t). L1 mean|s - t|: sign(s - t) / K.
  rows = softmax(s) - softmax(t) if loss == "kl" else np.sign(s - t) / NUM_CLASSES
  norms = np.linalg.norm(rows, axis=1, keepdims=True)
  released = clip * rows / (norms + 1e-6) + noise_multiplier * clip * noise
  # Backprop of released / B through the linear student, then one SGD step.
  expected_w = w_s - lr * x.T @ released / batch
  expected_b = b_s - lr * released.sum(axis=0) / batch
  got_w, got_b = model.student.get_weights()
  np.testing.assert_allclose(got_w, expected_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_b, expected_b, rtol=1e-5, atol=1e-6)
  # The teacher and (with 0 generator steps) the generator are untouched.
  np.testing.assert_array_equal(model.teacher.get_weights()[0], w_t)
  np.testing.assert_array_equal(model.generator.get_weights()[0], w_g)
  assert int(model.private_steps.numpy()) == 1


def test_student_mode_generator_step_never_calls_the_teacher():
  calls = []
  teacher, student, generator = linear_models(teacher_calls=calls)
  model = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=1.0,
                          generator_mode="student", seed=0, noise_seed=0)
  model.compile(student_optimizer="sgd", generator_optimizer="sgd")
  latents = model.sample_latents()
  released = tf.random.normal([4, NUM_CLASSES])
  before = [w.copy() for w in generator.get_weights()]
  calls.clear()  # building the functional teacher called the layer once, symbolically
  model.generator_step(latents, released)  # eager: every teacher call would be recorded
  assert not calls
  assert any(not np.array_equal(a, b) for a, b in zip(before, generator.get_weights()))
  model.private_student_step()  # positive control: the student step does query the teacher
  assert calls
  assert model.is_private and math.isfinite(model.epsilon(1e-5, steps=10))


@pytest.mark.parametrize("mode", ["teacher", "adversarial"])
def test_teacher_querying_generator_forces_infinite_epsilon(mode):
  calls = []
  teacher, student, generator = linear_models(teacher_calls=calls)
  model = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=50.0,
                          generator_mode=mode, seed=0, noise_seed=0, max_private_steps=2)
  model.compile(student_optimizer="sgd", generator_optimizer="sgd")
  calls.clear()
  model.generator_step(model.sample_latents(), tf.zeros([4, NUM_CLASSES]))
  assert calls  # this generator does query the teacher
  model.fit(verbose=0)
  assert not model.is_private
  assert math.isinf(model.epsilon(1e-5))
  from dpdfd_tf import accounting  # pylint: disable=g-import-not-at-top
  report = accounting.privacy_report(model.release(), 1e-5, 1.0, model.not_private_reason())
  assert report["private"] is False and report["epsilon"] == "inf"
  assert "queries the teacher" in report["not_private_reason"]


def test_xla_and_plain_steps_agree():
  plain = make_model(jit_compile=False, generator_steps=1, max_private_steps=3)
  xla = make_model(jit_compile=True, generator_steps=1, max_private_steps=3)
  plain.fit(verbose=0)
  xla.fit(verbose=0)
  for a, b in zip(plain.student.get_weights() + plain.generator.get_weights(),
                  xla.student.get_weights() + xla.generator.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_budget_is_never_exceeded():
  model = make_model(max_private_steps=5, student_steps_per_iteration=2)
  model.fit(steps_per_epoch=10, epochs=3, verbose=0)
  assert int(model.private_steps.numpy()) == 4  # a third iteration would need steps 5 and 6
  with pytest.raises(errors.BudgetExhaustedError):
    model.fit(steps_per_epoch=1, verbose=0)


def test_resume_from_checkpoint_continues_count_and_matches_uninterrupted_run(tmp_path):
  uninterrupted = make_model(noise_multiplier=0.5, generator_steps=1, max_private_steps=4)
  uninterrupted.fit(verbose=0)

  first = make_model(noise_multiplier=0.5, generator_steps=1, max_private_steps=4)
  first.fit(steps_per_epoch=2, verbose=0)
  path = first.checkpoint().save(str(tmp_path / "ckpt"))
  # A fresh process: same teacher (loaded from disk, never checkpointed), other weights.
  resumed = make_model(noise_multiplier=0.5, generator_steps=1, max_private_steps=4)
  resumed.student.set_weights([w + 1.0 for w in resumed.student.get_weights()])
  resumed.checkpoint().restore(path).assert_existing_objects_matched()
  assert int(resumed.private_steps.numpy()) == 2
  resumed.fit(verbose=0)
  assert int(resumed.private_steps.numpy()) == 4
  assert resumed.epsilon(1e-5) == uninterrupted.epsilon(1e-5)
  for a, b in zip(uninterrupted.student.get_weights(), resumed.student.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_generator_warmup_is_free_and_counted():
  model = make_model(generator_warmup_steps=3, max_private_steps=1)
  before = model.generator.get_weights()[0].copy()
  model.warm_up_generator()
  assert int(model.warmup_steps_done.numpy()) == 3
  assert int(model.private_steps.numpy()) == 0  # no teacher, no private step
  assert not np.array_equal(before, model.generator.get_weights()[0])


@pytest.mark.parametrize("kwargs", [{"clip_norm": 0.0}, {"clip_norm": -1.0}, {"batch_size": 0},
                                    {"noise_multiplier": -0.1}, {"generator_mode": "magic"},
                                    {"distillation_loss": "mse"}])
def test_constructor_rejects_bad_values(kwargs):
  teacher, student, generator = linear_models()
  with pytest.raises(ValueError):
    distiller.DPDFD(teacher, student, generator, **kwargs)


def test_logged_metrics_exclude_teacher_outputs_when_private():
  private = make_model(noise_multiplier=1.0, max_private_steps=1)
  history = private.fit(verbose=0).history
  assert "distillation_loss" not in history and "teacher_agreement" not in history
  public = make_model(noise_multiplier=0.0, max_private_steps=1)
  assert "teacher_agreement" in public.fit(verbose=0).history


def test_non_finite_loss_stops_before_checkpointing_and_keeps_the_count(tmp_path):
  from dpdfd_tf import callbacks  # pylint: disable=g-import-not-at-top
  model = make_model(max_private_steps=10, generator_steps=1, learning_rate=1e30)
  manager = tf.train.CheckpointManager(model.checkpoint(), str(tmp_path), max_to_keep=3)
  with pytest.raises(errors.NonFiniteLossError, match="became"):
    model.fit(steps_per_epoch=10, verbose=0,
              callbacks=[callbacks.StopOnNonFinite(), callbacks.Checkpointing(manager, every=1)])
  steps = int(model.private_steps.numpy())
  assert 1 <= steps < 10  # stopped early, and every step that ran is counted
  assert manager.latest_checkpoint is not None
  model.checkpoint().restore(manager.latest_checkpoint)
  assert all(np.all(np.isfinite(w)) for w in model.student.get_weights())
