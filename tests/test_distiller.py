"""The DPDFD Keras model: one step against a hand-derived update, privacy status, budget, resume."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dpdfd_tf import accounting
from dpdfd_tf import architectures
from dpdfd_tf import distiller
from dpdfd_tf import errors
from dpdfd_tf import losses
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
  latent_rng = mechanism.CounterRandom(11)
  latents = mechanism.standard_normal(latent_rng, [batch, LATENT_DIM]).numpy()
  mix = mechanism.uniform(latent_rng, [batch, 1]).numpy()
  noise = mechanism.standard_normal(mechanism.CounterRandom(22),
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
  report = model.privacy_report(1e-5)
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


def ensemble_models(num_teachers=4, seed=0):
  """linear_models with the teacher replaced by M linear teachers: images -> [B, M, K]."""
  _, student, generator = linear_models(seed)
  images = keras.Input(IMAGE_SHAPE, name="images")
  logits = architectures.StackedDense(num_teachers, NUM_CLASSES, name="logits")(
      keras.layers.Flatten()(images))
  return keras.Model(images, logits, name="ensemble"), student, generator


def test_ensemble_step_releases_the_mean_of_normalized_member_rows():
  batch, clip, members = 6, 0.5, 4
  teacher, student, generator = ensemble_models(members)
  model = distiller.DPDFD(teacher, student, generator, batch_size=batch, clip_norm=clip,
                          noise_multiplier=0.0, seed=11, noise_seed=22, input_mixup=False,
                          generator_steps_per_iteration=0)
  model.compile(student_optimizer="sgd", generator_optimizer="sgd")
  latents = mechanism.standard_normal(mechanism.CounterRandom(11),
                                      [batch, LATENT_DIM]).numpy()
  x = (latents @ generator.get_weights()[0]).reshape(batch, -1)
  kernel, bias = teacher.get_weights()  # [M, 16, K], [M, K]
  t = np.einsum("bi,mik->bmk", x, kernel) + bias  # [B, M, K]
  w_s, b_s = student.get_weights()
  s = x @ w_s + b_s
  rows = softmax(s)[:, None, :] - np.stack([softmax(t[:, m]) for m in range(members)], 1)
  expected = (clip * rows / (np.linalg.norm(rows, axis=-1, keepdims=True) + 1e-6)).mean(1)

  _, released = model.private_student_step()
  np.testing.assert_allclose(released.numpy(), expected, rtol=1e-5, atol=1e-6)
  (release,) = model.release()
  assert release.unit == "teacher_ensemble" and release.num_teachers == members


def test_sampled_aggregation_uses_one_teacher_per_step_and_its_unit():
  teacher, student, generator = ensemble_models(5)
  model = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=0.0,
                          teacher_aggregation="sample", seed=1, noise_seed=2, input_mixup=False)
  model.compile(student_optimizer="sgd", generator_optimizer="sgd")
  latents = mechanism.standard_normal(mechanism.CounterRandom(1), [4, LATENT_DIM])
  images = generator(latents)
  chosen = int(mechanism.sample_teacher(mechanism.CounterRandom(2), 5))
  rows = losses.distillation_rows("kl", student(images), teacher(images)[:, chosen])
  _, released = model.private_student_step()
  np.testing.assert_allclose(released.numpy(), mechanism.normalize_rows(rows, 1.0).numpy(),
                             rtol=1e-5, atol=1e-6)
  model = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=3.0,
                          teacher_aggregation="sample")
  assert model.release(100)[0].unit == "teacher_sampled"
  assert math.isfinite(model.epsilon(1e-5, 100))


def test_dp_optimizer_mechanism_trains_and_is_accounted_with_sensitivity_2cb():
  from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras  # pylint: disable=g-import-not-at-top
  teacher, student, generator = linear_models()
  model = distiller.DPDFD(teacher, student, generator, batch_size=8, clip_norm=0.5,
                          noise_multiplier=2.0, student_mechanism="dp_optimizer",
                          noise_seed=3, max_private_steps=2)
  model.compile(student_optimizer=dp_optimizer_keras.DPKerasSGDOptimizer(
      l2_norm_clip=0.5, noise_multiplier=2.0, num_microbatches=None, learning_rate=0.1),
                generator_optimizer="sgd")
  before = student.get_weights()[0].copy()
  history = model.fit(verbose=0)
  assert int(model.private_steps.numpy()) == 2
  assert not np.array_equal(before, student.get_weights()[0])
  assert "released_row_norm" not in history.history  # no rows are released: nothing to log
  (release,) = model.release()
  assert release.unit == "dp_optimizer"
  assert release.effective_noise_multiplier == pytest.approx(2.0 / (2 * 8))
  # An optimizer that is not the one accounted is refused.
  with pytest.raises(ValueError, match="tensorflow-privacy"):
    model.compile(student_optimizer="adam", generator_optimizer="sgd")
  with pytest.raises(ValueError, match="noise multiplier"):
    model.compile(student_optimizer=dp_optimizer_keras.DPKerasSGDOptimizer(
        l2_norm_clip=0.5, noise_multiplier=1.0, num_microbatches=None), generator_optimizer="sgd")
  with pytest.raises(ValueError, match="ensemble"):
    distiller.DPDFD(*ensemble_models(3), student_mechanism="dp_optimizer")


def test_dp_teacher_guided_generator_releases_normalized_noised_image_gradients():
  calls = []
  teacher, student, generator = linear_models(teacher_calls=calls)
  model = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=0.0,
                          generator_mode="dp_teacher_guided", generator_clip_norm=0.3,
                          distillation_loss="l1", seed=0, noise_seed=0)
  model.compile(student_optimizer="sgd", generator_optimizer="sgd")
  images = generator(model.sample_latents())
  calls.clear()
  released = model.released_image_gradients(images).numpy()
  assert calls  # the teacher is used, through this channel only
  norms = np.linalg.norm(released.reshape(4, -1), axis=1)
  np.testing.assert_allclose(norms, 0.3, rtol=1e-4)  # sigma 0: exactly normalized
  assert int(model.guided_steps.numpy()) == 1
  # Row i depends on image i only: changing image 0 leaves the other rows unchanged.
  changed = images.numpy().copy()
  changed[0] += 1.0
  again = model.released_image_gradients(tf.constant(changed)).numpy()
  np.testing.assert_allclose(again[1:], released[1:], rtol=1e-5, atol=1e-7)

  noisy = distiller.DPDFD(teacher, student, generator, batch_size=4, noise_multiplier=5.0,
                          generator_mode="dp_teacher_guided", generator_steps_per_iteration=2,
                          seed=0, noise_seed=0, max_private_steps=3)
  noisy.compile(student_optimizer="sgd", generator_optimizer="sgd")
  noisy.fit(verbose=0)
  student_release, generator_release = noisy.release()
  assert generator_release.steps == int(noisy.guided_steps.numpy()) == 6
  assert noisy.is_private
  assert noisy.epsilon(1e-5) > accounting.epsilon(student_release, 1e-5)
  assert noisy.epsilon(1e-5) == pytest.approx(noisy.epsilon(1e-5, steps=3))


def test_dp_teacher_makes_a_noise_free_run_private_at_the_teacher_epsilon():
  teacher_training = accounting.Release(1.0, 64, 100, unit="dp_sgd", dataset_size=1000)
  model = make_model(0.0, generator_mode="adversarial", teacher_training=teacher_training,
                     max_private_steps=2)
  model.fit(verbose=0)
  assert not model.is_private  # the distillation alone is not
  assert model.epsilon(1e-5) == pytest.approx(accounting.epsilon(teacher_training, 1e-5))
  report = model.privacy_report(1e-5)
  assert report["private"] and report["bound"].startswith("dp_teacher")


@pytest.fixture
def mixed_precision():
  keras.mixed_precision.set_global_policy("mixed_float16")
  yield
  keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_keeps_the_dp_arithmetic_in_float32(mixed_precision):
  del mixed_precision
  low = make_model(0.0, clip_norm=0.5, max_private_steps=2)
  assert low.student.layers[-1].compute_dtype == "float16"
  assert isinstance(low.student_optimizer, keras.mixed_precision.LossScaleOptimizer)
  _, released = low.private_student_step()
  assert released.dtype == tf.float32
  assert np.all(np.linalg.norm(released.numpy(), axis=1) <= 0.5 + 1e-6)
  keras.mixed_precision.set_global_policy("float32")
  full = make_model(0.0, clip_norm=0.5, max_private_steps=2)
  full.private_student_step()
  # Same seeds, same update up to float16 rounding of the forward pass.
  np.testing.assert_allclose(low.student.get_weights()[0], full.student.get_weights()[0],
                             rtol=0, atol=2e-3)
  assert low.student.get_weights()[0].dtype == np.float32
  noisy = make_model(3.0, clip_norm=0.5, generator_steps=1, max_private_steps=2)
  keras.mixed_precision.set_global_policy("mixed_float16")
  noisy_low = make_model(3.0, clip_norm=0.5, generator_steps=1, max_private_steps=2)
  noisy_low.fit(verbose=0)
  noisy.fit(verbose=0)
  assert int(noisy_low.private_steps.numpy()) == 2
  assert noisy_low.epsilon(1e-5) == noisy.epsilon(1e-5)
  assert np.all(np.isfinite(noisy_low.student.get_weights()[0]))


def test_adversarial_generator_maximizes_the_students_own_distillation_loss():
  student = tf.constant([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  teacher = tf.constant([[0.0, 2.0, 0.0], [0.5, -0.5, 1.0]])
  # l1: DFAD's mean absolute logit distance, by hand: (1 + 2 + 1) / 3 and (0 + 1 + 1) / 3.
  np.testing.assert_allclose(losses.discrepancy_loss("l1", student, teacher),
                             -np.mean([4 / 3, 2 / 3]), rtol=1e-6)
  # kl: the generator's objective ignores a logit offset, as the KL student does (the L1
  # distance would grow with it and send the generator after a gap the student cannot close).
  shifted = student + 5.0
  np.testing.assert_allclose(losses.discrepancy_loss("kl", shifted, teacher),
                             losses.discrepancy_loss("kl", student, teacher), rtol=1e-5)
  p = tf.nn.softmax(teacher).numpy()
  kl = np.sum(p * (np.log(p) - tf.nn.log_softmax(student).numpy()), axis=-1)
  np.testing.assert_allclose(losses.discrepancy_loss("kl", student, teacher), -kl.mean(),
                             rtol=1e-5)
