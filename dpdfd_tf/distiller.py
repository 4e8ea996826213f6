"""The DPDFD Keras model: alternating private student steps and generator steps.

Usage, as any Keras model::

    model = DPDFD(teacher=teacher, student=student, generator=generator,
                  noise_multiplier=sigma, clip_norm=1.0, batch_size=256, max_private_steps=2000)
    model.compile(student_optimizer=keras.optimizers.Adam(1e-3),
                  generator_optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    model.fit(steps_per_epoch=100, epochs=20, callbacks=[...])   # no data: it is data-free

The privacy-relevant state (``private_steps``) lives in the model and in every checkpoint; the
accountant (``privacy_report``) always reads that counter, never the plan, so a run can never
report less than it spent.
"""

import dataclasses
import math
import secrets
from typing import Optional

import tensorflow as tf

from dpdfd_tf import accounting
from dpdfd_tf import losses
from dpdfd_tf import mechanism
from dpdfd_tf._compat import keras
from dpdfd_tf.errors import BudgetExhaustedError

GENERATOR_MODES = ("student", "dp_teacher_guided", "teacher", "adversarial")
# Generator modes whose every path from the teacher is normalized and noised (accounted).
PRIVATE_GENERATOR_MODES = ("student", "dp_teacher_guided")
STUDENT_MECHANISMS = ("output_gradient", "dp_optimizer")
TEACHER_AGGREGATIONS = ("mean", "sample")


@dataclasses.dataclass(frozen=True)
class GeneratorLossWeights:
  """Weights of the teacher-free (``student``) generator objective. All terms are free in privacy.

  Attributes:
    confidence: one-hot term, CE of the student on its own argmax (the paper's loss).
    balance: information-entropy term, pushes the student's batch-mean prediction to uniform.
    image_diversity: mean pairwise distance between generated images (prevents collapse).
    feature_diversity: mean pairwise distance between the student's probability vectors.
    released_rows: adversarial term on the released noisy rows (post-processing). Off by default:
      on Fashion-MNIST without noise it cost accuracy (70.4% with weight 1 against 75.4% without
      at 1,000 steps, one seed each).
    teacher_guidance: weight of the released (normalized, noised) per-image teacher gradients
      in the ``dp_teacher_guided`` mode; unused otherwise.
  """
  confidence: float = 1.0
  balance: float = 5.0
  image_diversity: float = 1.0
  feature_diversity: float = 1.0
  released_rows: float = 0.0
  teacher_guidance: float = 1.0


class DPDFD(keras.Model):
  """Differentially private data-free distillation as a Keras model.

  Args:
    teacher: Keras model, [0, 1] images -> logits [B, K], or an ensemble of M teachers trained
      on disjoint shards -> [B, M, K] (see ``teacher_aggregation``). Frozen; only ever called
      in inference mode.
    student: Keras model, [0, 1] images -> logits. Trained on released (noisy) rows only.
    generator: Keras model, latents -> [0, 1] images.
    batch_size: B, synthetic samples per step. Privacy: in the teacher unit the release's
      sensitivity grows as sqrt(B).
    clip_norm: C, each per-sample row is normalized to norm <= C before noise.
    noise_multiplier: sigma; noise std per entry is sigma * C. 0 is not private.
    distillation_loss: 'kl' (at ``temperature``) or 'l1' on logits.
    temperature: softening temperature for 'kl'.
    generator_mode: 'student' (teacher-free, free in privacy); 'dp_teacher_guided' (the
      generator also maximizes the teacher-student discrepancy, but sees the teacher only through
      per-image gradients normalized to ``generator_clip_norm`` and noised with the same sigma:
      one more Gaussian release per generator step, accounted in the teacher unit); 'teacher'
      (DAFL: the teacher as the discriminator) or 'adversarial' (DFAD: maximize teacher-student
      discrepancy). The last two query the teacher without noise: the run is NOT private
      whatever sigma is (unless the teacher itself was trained with DP, see
      ``teacher_training``).
    generator_clip_norm: C_g, norm bound of each per-image teacher gradient
      ('dp_teacher_guided').
    student_mechanism: 'output_gradient' (DPDFD: normalize and noise the per-sample rows) or
      'dp_optimizer' (``student_optimizer`` must be a tensorflow-privacy DPKeras optimizer with
      one microbatch per sample; accounted with sensitivity 2*C*B, ``dp_optimizer`` unit). Its
      noise comes from TensorFlow's global seed, which is set from OS entropy (or from
      ``noise_seed``) at compile time.
    teacher_aggregation: for an ensemble teacher, 'mean' (average the M normalized rows, the
      teacher_ensemble unit) or 'sample' (one secret, uniformly drawn teacher per step, the
      teacher_sampled unit).
    teacher_training: the dp_sgd ``accounting.Release`` that trained the teacher, when it was
      trained with DP: the run is then also bounded by the teacher's epsilon (post-processing).
    student_steps_per_iteration: private student steps per train_step.
    generator_steps_per_iteration: generator steps per train_step.
    generator_warmup_steps: generator-only steps (image diversity, no student, no teacher) run
      before the first student step; free in privacy.
    generator_loss_weights: GeneratorLossWeights for the 'student' mode.
    max_private_steps: budget in private steps; fit never runs a step past it.
    input_mixup: the student step sees each generated image mixed with its neighbour in the
      batch (random weights): more varied inputs for the same generator. The mixed images are
      still independent of the private data, so the accounting is unchanged. Measured on
      Fashion-MNIST without noise (teacher-free generator, 1,000 steps, same seed): 75.1% with,
      65.5% without.
    seed: seed for latents (and weights' initial noise stream when ``noise_seed`` is None).
    noise_seed: seed of the privacy noise. Leave None (OS entropy) for real runs: anyone who
      knows a fixed noise seed can subtract the noise.
  """

  def __init__(self, teacher, student, generator, *, batch_size=256, clip_norm=1.0,
               noise_multiplier=0.0, distillation_loss="kl", temperature=1.0,
               generator_mode="student", student_steps_per_iteration=1,
               generator_steps_per_iteration=1, generator_warmup_steps=0,
               generator_loss_weights=GeneratorLossWeights(), generator_clip_norm=1.0,
               student_mechanism="output_gradient", teacher_aggregation="mean",
               teacher_training: Optional[accounting.Release] = None,
               max_private_steps: Optional[int] = None, input_mixup=True, seed=None,
               noise_seed=None, name="dpdfd", **kwargs):
    super().__init__(name=name, **kwargs)
    _check(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    _check(clip_norm > 0 and math.isfinite(clip_norm), f"clip norm must be > 0, got {clip_norm}")
    _check(noise_multiplier >= 0 and math.isfinite(noise_multiplier),
           f"noise multiplier must be >= 0, got {noise_multiplier}")
    _check(distillation_loss in losses.DISTILLATION_LOSSES,
           f"unknown distillation loss {distillation_loss!r}")
    _check(temperature > 0, f"temperature must be > 0, got {temperature}")
    _check(generator_mode in GENERATOR_MODES, f"unknown generator mode {generator_mode!r}; "
           f"expected one of {GENERATOR_MODES}")
    _check(student_steps_per_iteration >= 1 and generator_steps_per_iteration >= 0,
           "need >= 1 student step and >= 0 generator steps per iteration")
    _check(max_private_steps is None or max_private_steps >= 0, "max_private_steps must be >= 0")
    _check(generator_clip_norm > 0 and math.isfinite(generator_clip_norm),
           f"generator clip norm must be > 0, got {generator_clip_norm}")
    _check(student_mechanism in STUDENT_MECHANISMS,
           f"unknown student mechanism {student_mechanism!r}; expected one of "
           f"{STUDENT_MECHANISMS}")
    _check(teacher_aggregation in TEACHER_AGGREGATIONS,
           f"unknown teacher aggregation {teacher_aggregation!r}; expected one of "
           f"{TEACHER_AGGREGATIONS}")
    _check(len(teacher.output_shape) in (2, 3),
           f"teacher output shape {teacher.output_shape}: expected [B, K] or [B, M, K]")
    self.num_teachers = int(teacher.output_shape[1]) if len(teacher.output_shape) == 3 else 1
    _check(not (self.num_teachers > 1 and student_mechanism == "dp_optimizer"),
           "the dp_optimizer student mechanism clips per-sample weight gradients, which cannot "
           "use the 1/M sensitivity of an ensemble; use the output_gradient mechanism")
    _check(teacher_training is None or teacher_training.unit == "dp_sgd",
           "teacher_training must be the dp_sgd release that trained the teacher")
    _check(teacher.output_shape[-1] == student.output_shape[-1],
           f"teacher has {teacher.output_shape[-1]} outputs, student "
           f"{student.output_shape[-1]}")
    _check(tuple(generator.output_shape[1:]) == tuple(student.input_shape[1:]) ==
           tuple(teacher.input_shape[1:]),
           f"generator output {generator.output_shape[1:]}, student input "
           f"{student.input_shape[1:]} and teacher input {teacher.input_shape[1:]} differ")
    teacher.trainable = False
    self.teacher = teacher
    self.student = student
    self.generator = generator
    self.batch_size = int(batch_size)
    self.latent_dim = int(generator.input_shape[-1])
    self.clip_norm = float(clip_norm)
    self.noise_multiplier = float(noise_multiplier)
    self.distillation_loss = distillation_loss
    self.temperature = float(temperature)
    self.generator_mode = generator_mode
    self.student_steps_per_iteration = int(student_steps_per_iteration)
    self.generator_steps_per_iteration = int(generator_steps_per_iteration)
    self.generator_warmup_steps = int(generator_warmup_steps)
    self.generator_loss_weights = generator_loss_weights
    self.max_private_steps = max_private_steps
    self.input_mixup = bool(input_mixup)
    self.generator_clip_norm = float(generator_clip_norm)
    self.student_mechanism = student_mechanism
    self.teacher_aggregation = teacher_aggregation
    self.teacher_training = teacher_training
    self.noise_seed = noise_seed
    self.noise_seed_is_fixed = noise_seed is not None
    # Latents and noise come from separate streams: the latent seed may be published, the noise
    # stream must stay secret (checkpoints hold its state; treat them like the teacher).
    self.latent_rng = mechanism.CounterRandom(seed, name="latent_rng")
    self.noise_rng = mechanism.CounterRandom(noise_seed, name="noise_rng")
    self.private_steps = mechanism.synced_counter("private_steps")
    self.warmup_steps_done = mechanism.synced_counter("warmup_steps_done")
    # Generator releases of the dp_teacher_guided mode (each one a Gaussian release).
    self.guided_steps = mechanism.synced_counter("guided_steps")
    self._trackers = {name: keras.metrics.Mean(name=name) for name in self._metric_names()}

  # ---- privacy status -------------------------------------------------------------------------

  @property
  def generator_queries_teacher(self) -> bool:
    """True when the generator calls the teacher without normalization and noise."""
    return self.generator_mode not in PRIVATE_GENERATOR_MODES

  @property
  def is_private(self) -> bool:
    """True if every path from the teacher to a released value is normalized and noised.

    (A run that is not private by this test is still private when the teacher was trained
    with DP: see ``epsilon``.)
    """
    return self.noise_multiplier > 0 and not self.generator_queries_teacher

  @property
  def student_unit(self) -> str:
    if self.student_mechanism == "dp_optimizer":
      return "dp_optimizer"
    if self.num_teachers > 1:
      return "teacher_ensemble" if self.teacher_aggregation == "mean" else "teacher_sampled"
    return "teacher"

  def release(self, steps=None):
    """What this model has released after ``steps`` private student steps (default: so far).

    A tuple of ``accounting.Release``: the student's rows, then (dp_teacher_guided) the
    generator's per-image teacher gradients. With ``steps`` None the counters saved in every
    checkpoint are read; given ``steps`` (a plan), the generator releases follow from it. A run
    that is not private is described with sigma = 0, so it accounts as epsilon = inf.
    """
    if steps is None:
      steps, guided = int(self.private_steps.numpy()), int(self.guided_steps.numpy())
    else:
      steps = int(steps)
      guided = (steps // self.student_steps_per_iteration) * self.generator_steps_per_iteration
    sigma = self.noise_multiplier if self.is_private else 0.0
    releases = [accounting.Release(
        noise_multiplier=sigma, batch_size=self.batch_size, steps=steps, unit=self.student_unit,
        num_teachers=self.num_teachers, clip_norm=self.clip_norm, name="student rows")]
    if self.generator_mode == "dp_teacher_guided":
      releases.append(accounting.Release(
          noise_multiplier=sigma, batch_size=self.batch_size, steps=guided, unit="teacher",
          clip_norm=self.generator_clip_norm, name="generator image gradients"))
    return tuple(releases)

  def epsilon(self, delta, steps=None) -> float:
    """The smaller of the distillation bound and (for a DP teacher) the teacher's epsilon."""
    distillation = accounting.epsilon(self.release(steps), delta)
    if self.teacher_training is None:
      return distillation
    return min(distillation, accounting.epsilon(self.teacher_training, delta))

  def not_private_reason(self) -> Optional[str]:
    if self.generator_queries_teacher:
      return (f"generator mode {self.generator_mode!r} queries the teacher without noise; "
              "its samples and the generator are functions of the private data")
    if self.noise_multiplier == 0:
      return "noise multiplier is 0: the rows are released without noise"
    return None

  def privacy_report(self, delta, **details) -> dict:
    """``accounting.privacy_report`` for what this model has released so far."""
    return accounting.privacy_report(self.release(), delta, self.not_private_reason(),
                                     teacher_training=self.teacher_training, **details)

  # ---- Keras plumbing ---------------------------------------------------------------------------

  def compile(self, student_optimizer="adam", generator_optimizer="adam", **kwargs):
    """Like keras.Model.compile, with one optimizer per network (names or instances)."""
    if kwargs.get("steps_per_execution", 1) != 1 and self.max_private_steps is not None:
      raise ValueError("steps_per_execution must be 1 when a privacy budget is enforced")
    super().compile(**kwargs)
    replicas = self.distribute_strategy.num_replicas_in_sync
    _check(self.batch_size % replicas == 0,
           f"batch size {self.batch_size} must be a multiple of the {replicas} replicas")
    _check(replicas == 1 or self.student_mechanism != "dp_optimizer",
           "the dp_optimizer student mechanism runs on one device only")
    self.student_optimizer = keras.optimizers.get(student_optimizer)
    if self.student_mechanism == "dp_optimizer":
      _check_dp_optimizer(self.student_optimizer, self.clip_norm, self.noise_multiplier)
      # tensorflow-privacy draws its noise from tf.random with seeds derived from the global
      # seed: a public --seed would make it reproducible, so reseed from OS entropy.
      tf.random.set_seed(self.noise_seed if self.noise_seed is not None
                         else secrets.randbits(31))
    self.generator_optimizer = keras.optimizers.get(generator_optimizer)
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
      _check(self.student_mechanism != "dp_optimizer",
             "mixed precision is not supported with the dp_optimizer student mechanism")
      # Loss scaling keeps float16 weight gradients from underflowing. A skipped update (non-
      # finite scaled gradients) still counts as a private step: the rows were released.
      self.student_optimizer, self.generator_optimizer = (
          _loss_scaled(self.student_optimizer), _loss_scaled(self.generator_optimizer))
    # Build slots now so that warm-up and train_step share them under tf.function/XLA.
    for optimizer, network in ((self.student_optimizer, self.student),
                               (self.generator_optimizer, self.generator)):
      if hasattr(optimizer, "build"):
        optimizer.build(network.trainable_variables)

  @property
  def metrics(self):
    return list(self._trackers.values())

  def _metric_names(self):
    names = ["generator_loss", "student_batch_entropy"]
    if self.student_mechanism == "output_gradient":  # dp_optimizer releases no rows
      names.append("released_row_norm")
    if not self.is_private:
      # Computed from raw teacher outputs: only logged when the run is not private anyway.
      names += ["distillation_loss", "teacher_agreement"]
    return names

  def call(self, images, training=False):
    return self.student(images, training=training)

  def sample_latents(self, batch_size=None):
    return mechanism.standard_normal(self.latent_rng,
                                     [batch_size or self.batch_size, self.latent_dim])

  def checkpoint(self, **extra) -> tf.train.Checkpoint:
    """Everything needed to resume: networks, optimizers, RNG states and the private step count.

    It holds the noise generator's state: keep checkpoints as private as the teacher.
    """
    return tf.train.Checkpoint(
        student=self.student, generator=self.generator,
        student_optimizer=self.student_optimizer, generator_optimizer=self.generator_optimizer,
        latent_rng=self.latent_rng, noise_rng=self.noise_rng, private_steps=self.private_steps,
        warmup_steps_done=self.warmup_steps_done, guided_steps=self.guided_steps, **extra)

  def fit(self, x=None, *args, callbacks=None, steps_per_epoch=None, **kwargs):
    """keras.Model.fit without data: runs the generator warm-up, then the alternating steps.

    ``steps_per_epoch`` defaults to the iterations left in the privacy budget. A ``PrivacyBudget``
    callback is always added: no step runs past ``max_private_steps``.
    """
    if x is None:
      # One dummy element per replica: every input is generated inside train_step.
      x = tf.data.Dataset.from_tensors(
          tf.zeros([self.distribute_strategy.num_replicas_in_sync])).repeat()
    remaining = self.remaining_iterations()
    if remaining == 0:
      raise BudgetExhaustedError(
          f"privacy budget exhausted: {int(self.private_steps.numpy())} of "
          f"{self.max_private_steps} private steps already taken")
    if steps_per_epoch is None:
      if remaining is None:
        raise ValueError("pass steps_per_epoch (no max_private_steps to derive it from)")
      steps_per_epoch = remaining
    self.warm_up_generator()
    callbacks = list(callbacks or [])
    if not any(isinstance(c, PrivacyBudget) for c in callbacks):
      callbacks.insert(0, PrivacyBudget())
    return super().fit(x, *args, callbacks=callbacks, steps_per_epoch=steps_per_epoch, **kwargs)

  def remaining_iterations(self) -> Optional[int]:
    if self.max_private_steps is None:
      return None
    left = self.max_private_steps - int(self.private_steps.numpy())
    return max(0, left // self.student_steps_per_iteration)

  # ---- the algorithm ----------------------------------------------------------------------------

  def warm_up_generator(self):
    """Trains the generator for coarse image diversity alone (no student, no teacher): free."""
    remaining = self.generator_warmup_steps - int(self.warmup_steps_done.numpy())
    if remaining <= 0 or self.generator_mode not in PRIVATE_GENERATOR_MODES:
      return
    if not hasattr(self, "_warmup_function"):
      self._warmup_function = tf.function(self._warmup_step, jit_compile=self._jit_compile)
    for _ in range(remaining):
      self.distribute_strategy.run(self._warmup_function)

  def _warmup_step(self):
    part = self.batch_slice()
    latents = part.take(self.sample_latents())
    with tf.GradientTape() as tape:
      images = tf.cast(self.generator(latents, training=True), tf.float32)
      # Replicas' gradients are summed: each contributes 1/R of its slice's loss.
      loss = losses.coarse_image_diversity_loss(images) / part.count
    variables = self.generator.trainable_variables
    _minimize(self.generator_optimizer, tape, loss, variables)
    self.warmup_steps_done.assign_add(1)
    return loss

  def train_step(self, data):
    del data  # data-free: every input is generated
    for _ in range(self.student_steps_per_iteration):
      latents, released = self.private_student_step()
    for _ in range(self.generator_steps_per_iteration):
      self.generator_step(latents, released)
    return {name: tracker.result() for name, tracker in self._trackers.items()}

  def private_student_step(self):
    """One DPDFD student step (docs/privacy.md, steps 1-6). Returns (latents, released rows)."""
    # 1. Synthetic inputs: independent of the private data. Under tf.distribute every replica
    #    draws the global batch's latents and keeps its own rows.
    part = self.batch_slice()
    latents = part.take(self.sample_latents())
    images = tf.cast(tf.stop_gradient(self.generator(latents, training=True)), tf.float32)
    if self.input_mixup:
      weights = part.take(mechanism.uniform(self.latent_rng, [self.batch_size, 1, 1, 1]))
      images = weights * images + (1.0 - weights) * tf.roll(images, shift=1, axis=0)
    # 2. Teacher (frozen, inference mode; [B, K] or [B, M, K]) and student logits.
    teacher_logits = self.teacher_logits(images)
    if self.num_teachers > 1 and self.teacher_aggregation == "sample":
      # One secret teacher answers this step (teacher_sampled unit).
      teacher_logits = tf.gather(teacher_logits, mechanism.sample_teacher(
          self.noise_rng, self.num_teachers), axis=1)
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      low_precision_logits = self.student(images, training=True)  # float16 if mixed precision
      # The DP arithmetic (rows, normalization, noise) stays in float32.
      student_logits = tf.cast(low_precision_logits, tf.float32)
      if self.student_mechanism == "dp_optimizer":
        per_sample_loss = losses.per_sample_distillation_loss(
            self.distillation_loss, student_logits, teacher_logits, self.temperature)
    if self.student_mechanism == "dp_optimizer":
      # tensorflow-privacy clips each sample's weight gradient to C and noises the sum.
      self.student_optimizer.minimize(per_sample_loss, variables, tape=tape)
      released = tf.zeros_like(student_logits)  # nothing row-shaped is released
    else:
      # 3. Per-sample gradients of the distillation loss w.r.t. the student logits: the only
      #    place the private data enters.
      rows = losses.distillation_rows(self.distillation_loss, student_logits, teacher_logits,
                                      self.temperature)
      # 4-5. Normalize each row to norm <= C (an ensemble's: then average over the M) and add
      #      N(0, (sigma C)^2) per entry.
      released = self.release_rows(rows)
      # 6. Backpropagate the released rows into the student: post-processing. Divided by the
      #    global B: replicas' gradients are summed.
      _minimize(self.student_optimizer, tape, low_precision_logits, variables,
                output_gradients=released / float(self.batch_size))
    self.private_steps.assign_add(1)

    self._trackers["student_batch_entropy"].update_state(losses.batch_entropy(student_logits))
    if "released_row_norm" in self._trackers:
      self._trackers["released_row_norm"].update_state(
          tf.reduce_mean(tf.norm(released, axis=-1)))
    if not self.is_private:
      teacher_logits = aggregate_logits(teacher_logits)
      self._trackers["distillation_loss"].update_state(tf.reduce_mean(
          losses.per_sample_distillation_loss(self.distillation_loss, student_logits,
                                              teacher_logits, self.temperature)))
      self._trackers["teacher_agreement"].update_state(tf.reduce_mean(tf.cast(
          tf.equal(tf.argmax(student_logits, -1), tf.argmax(teacher_logits, -1)), tf.float32)))
    return latents, released

  def teacher_logits(self, images):
    """The frozen teacher in inference mode, float32: [B, K], or [B, M, K] for an ensemble."""
    return tf.cast(self.teacher(images, training=False), tf.float32)

  def release_rows(self, rows):
    """The DP mechanism on the private rows, [B, K] or an ensemble's [B, M, K] (a hook so
    benchmarks can time the step without it)."""
    if rows.shape.rank == 3:
      return mechanism.privatize_ensemble_rows(rows, self.clip_norm, self.noise_multiplier,
                                               self.noise_rng, self.batch_slice())
    return mechanism.privatize_rows(rows, self.clip_norm, self.noise_multiplier, self.noise_rng,
                                    self.batch_slice())

  def batch_slice(self) -> mechanism.BatchSlice:
    """The rows of the global batch this replica computes (all of them on one device)."""
    context = tf.distribute.get_replica_context()
    count = context.num_replicas_in_sync if context is not None else 1
    index = context.replica_id_in_sync_group if count > 1 else 0
    return mechanism.BatchSlice(self.batch_size, index, count)

  def generator_step(self, latents, released):
    """One generator step on the latents (and released rows) of the last student step."""
    variables = self.generator.trainable_variables
    with tf.GradientTape() as tape:
      images = tf.cast(self.generator(latents, training=True), tf.float32)
      student_logits = tf.cast(self.student(images, training=False), tf.float32)
      # Replicas' gradients are summed: each contributes 1/R of its slice's loss.
      loss = self.generator_loss(images, student_logits, released) / self.batch_slice().count
      if self.generator_mode == "dp_teacher_guided":
        # d/dvars of sum(images * g~) is J^T g~: the released image gradients, backpropagated.
        guidance = self.released_image_gradients(images)
        loss += self.generator_loss_weights.teacher_guidance * tf.reduce_sum(
            images * guidance) / float(self.batch_size)
    _minimize(self.generator_optimizer, tape, loss, variables)
    self._trackers["generator_loss"].update_state(loss)

  def released_image_gradients(self, images):
    """The dp_teacher_guided channel: per-image gradients of the negative teacher-student
    discrepancy, each normalized to norm <= C_g, plus N(0, (sigma C_g)^2) noise per pixel.

    Both networks run in inference mode, so image i's gradient depends on image i only; one
    changed teacher moves each of the B rows by at most 2 C_g (teacher unit).
    """
    images = tf.stop_gradient(images)
    with tf.GradientTape() as tape:
      tape.watch(images)
      teacher_logits = aggregate_logits(self.teacher_logits(images))
      student_logits = tf.cast(self.student(images, training=False), tf.float32)
      # Sum of per-image losses: its gradient w.r.t. image i is image i's own gradient.
      negative_discrepancy = -tf.reduce_sum(losses.per_sample_distillation_loss(
          self.distillation_loss, student_logits, teacher_logits, self.temperature))
    rows = tf.reshape(tape.gradient(negative_discrepancy, images), [tf.shape(images)[0], -1])
    released = mechanism.privatize_rows(rows, self.generator_clip_norm, self.noise_multiplier,
                                        self.noise_rng, self.batch_slice())
    self.guided_steps.assign_add(1)
    return tf.reshape(released, tf.shape(images))

  def generator_loss(self, images, student_logits, released):
    if self.generator_mode in PRIVATE_GENERATOR_MODES:
      # The student as a fixed discriminator, plus free terms; never a raw teacher call.
      weights = self.generator_loss_weights
      return (weights.confidence * losses.confidence_loss(student_logits)
              + weights.balance * losses.balance_loss(student_logits)
              + weights.image_diversity * losses.coarse_image_diversity_loss(images)
              + weights.feature_diversity * losses.diversity_loss(tf.nn.softmax(student_logits))
              + weights.released_rows * losses.released_rows_loss(released, student_logits,
                                                                  self.clip_norm))
    # NOT private (see not_private_reason).
    teacher_logits = aggregate_logits(self.teacher_logits(images))
    if self.generator_mode == "teacher":
      return (losses.confidence_loss(teacher_logits)
              + self.generator_loss_weights.balance * losses.balance_loss(teacher_logits))
    return losses.discrepancy_loss(self.distillation_loss, student_logits, teacher_logits,
                                   self.temperature)


def _loss_scaled(optimizer):
  if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
    return optimizer
  return keras.mixed_precision.LossScaleOptimizer(optimizer)


def _minimize(optimizer, tape, target, variables, output_gradients=None):
  """tape.gradient + apply_gradients, with loss scaling when ``optimizer`` does it.

  ``target`` is a scalar loss, or logits with ``output_gradients`` (the released rows).
  """
  scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
  if output_gradients is None:
    output_gradients = tf.ones_like(target, tf.float32)
  if scaled:  # scaling the output gradients scales every weight gradient the same way
    output_gradients = output_gradients * optimizer.loss_scale
  gradients = tape.gradient(target, variables,
                            output_gradients=tf.cast(output_gradients, target.dtype))
  if scaled:
    gradients = optimizer.get_unscaled_gradients(gradients)
  optimizer.apply_gradients(zip(gradients, variables))


def aggregate_logits(teacher_logits):
  """An ensemble's [B, M, K] logits as the log of its mean probabilities; [B, K] unchanged."""
  if teacher_logits.shape.rank == 3:
    return tf.math.log(tf.reduce_mean(tf.nn.softmax(teacher_logits), axis=1) + 1e-12)
  return teacher_logits


def _check_dp_optimizer(optimizer, clip_norm, noise_multiplier):
  """The dp_optimizer mechanism is only what the accountant assumes if the optimizer is a
  tensorflow-privacy DP optimizer with our C and sigma and one microbatch per sample."""
  query = getattr(optimizer, "_dp_sum_query", None)
  clip, stddev = getattr(query, "_l2_norm_clip", None), getattr(query, "_stddev", None)
  _check(clip is not None and stddev is not None and type(query).__name__ == "GaussianSumQuery",
         "student_mechanism='dp_optimizer' needs a tensorflow-privacy DPKeras Gaussian optimizer "
         f"(e.g. DPKerasAdamOptimizer) as student_optimizer, got {type(optimizer).__name__}")
  _check(math.isclose(clip, clip_norm) and math.isclose(stddev, clip * noise_multiplier),
         f"the DP optimizer clips to {clip} with noise multiplier {stddev / clip:g}, but the "
         f"model accounts clip_norm={clip_norm}, noise_multiplier={noise_multiplier}")
  _check(getattr(optimizer, "_num_microbatches", None) is None,
         "the DP optimizer must use one microbatch per sample (num_microbatches=None)")


class PrivacyBudget(keras.callbacks.Callback):
  """Stops training before a step that would exceed ``max_private_steps``; logs the step count.

  ``DPDFD.fit`` adds one automatically.
  """

  def on_train_batch_begin(self, batch, logs=None):
    if self.model.remaining_iterations() == 0:
      raise BudgetExhaustedError("privacy budget exhausted before this step")

  def on_train_batch_end(self, batch, logs=None):
    if logs is not None:
      logs["private_steps"] = int(self.model.private_steps.numpy())
    if self.model.remaining_iterations() == 0:
      self.model.stop_training = True


def _check(condition, message):
  if not condition:
    raise ValueError(message)
