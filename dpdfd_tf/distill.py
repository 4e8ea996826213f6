r"""Converts a teacher into a differentially private student and generator, without data.

  python -m dpdfd_tf.distill --flagfile=flags/fashion_mnist.cfg --teacher=runs/teacher/model \
      --epsilon=10 --delta=1e-5 --output_dir=runs/dpdfd

Writes to --output_dir: ``student/`` and ``generator/`` (SavedModels), ``privacy_report.json``,
``metrics.jsonl``, ``samples.png`` (refreshed during training), ``run_config.json`` and
``checkpoints/``. Checkpoints hold the noise generator's state: keep them as private as the
teacher. Rerunning with the same flags on an unfinished --output_dir resumes it, privacy budget
included.
"""

import dataclasses
import math
import os
import signal
import sys
import tempfile

from absl import flags
import numpy as np
import tensorflow as tf

from dpdfd_tf import cli  # defines the shared flags; sets up tf.keras (see _compat)
from dpdfd_tf import accounting
from dpdfd_tf import architectures
from dpdfd_tf import callbacks
from dpdfd_tf import data
from dpdfd_tf import distiller
from dpdfd_tf import export
from dpdfd_tf import teachers
from dpdfd_tf._compat import keras
from dpdfd_tf.errors import DpdfdError
from dpdfd_tf.errors import NonFiniteLossError

TEACHER = flags.DEFINE_string(
    "teacher", None, "Teacher: SavedModel directory, .keras or .h5. An ensemble of M teachers on "
    "disjoint shards (train_teacher --num_teachers) returns [B, M, K] and is detected.")
TEACHER_PRIVACY = flags.DEFINE_string(
    "teacher_privacy", "auto", "For a teacher trained with DP: its teacher.json (from "
    "train_teacher --dp_epsilon); the run is then also bounded by the teacher's epsilon. 'auto' "
    "reads teacher.json beside the teacher's directory if it says the teacher is private; "
    "'none' ignores it.")
TEACHER_AGGREGATION = flags.DEFINE_enum(
    "teacher_aggregation", "mean", list(distiller.TEACHER_AGGREGATIONS),
    "Ensemble teachers: mean (average the M normalized rows; sensitivity 2C/M per row) or "
    "sample (one secret teacher per step; subsampled Gaussian, q = 1/M).")
STUDENT_MECHANISM = flags.DEFINE_enum(
    "student_mechanism", "output_gradient", list(distiller.STUDENT_MECHANISMS),
    "output_gradient: DPDFD (normalize and noise the per-sample logit gradients). dp_optimizer: "
    "tensorflow-privacy DPKerasAdam/SGD optimizer on the student's weights, one microbatch per "
    "sample (sensitivity 2*C*B: far more noise for the same epsilon; for comparison).")
STUDENT_OPTIMIZER = flags.DEFINE_enum(
    "student_optimizer", "adam", ["adam", "sgd"], "Student optimizer (sgd: momentum 0.9). Adam "
    "rescales each coordinate, noise included; SGD does not.")
GENERATOR_CLIP_NORM = flags.DEFINE_float(
    "generator_clip_norm", 1.0, "C_g: per-image teacher gradients are normalized to norm <= C_g "
    "(--generator_mode=dp_teacher_guided).")
TEACHER_OUTPUTS = flags.DEFINE_enum("teacher_outputs", "auto", list(teachers.OUTPUT_KINDS),
                                    "Whether the teacher returns logits or probabilities.")
TEACHER_INPUT_RANGE = flags.DEFINE_string(
    "teacher_input_range", "0,1", "Input range the teacher was trained on: 'low,high' (e.g. "
    "'0,1', '-1,1', '0,255') or 'mean=m1[,m2,m3]/std=s1[,s2,s3]' applied to [0, 1] pixels.")
EPSILON = flags.DEFINE_float("epsilon", None, "Target epsilon: sigma is calibrated so that the "
                             "planned --steps spend at most this much.")
DELTA = flags.DEFINE_float("delta", 1e-5, "Target delta; choose < 1/(number of private records).")
NOISE_MULTIPLIER = flags.DEFINE_float(
    "noise_multiplier", None, "sigma, instead of --epsilon (epsilon is then reported). 0 disables "
    "the noise: not private.")
CLIP_NORM = flags.DEFINE_float("clip_norm", 1.0, "C: rows are normalized to norm <= C.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "B: synthetic samples per step.")
STEPS = flags.DEFINE_integer("steps", 1000, "Private student steps (T); the budget is planned "
                             "for exactly these.")
DISTILLATION_LOSS = flags.DEFINE_enum("distillation_loss", "kl", ["kl", "l1"],
                                      "Distillation loss on logits.")
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Temperature of the KL loss.")
GENERATOR_MODE = flags.DEFINE_enum(
    "generator_mode", "student", list(distiller.GENERATOR_MODES),
    "student: teacher-free (private). dp_teacher_guided: also maximizes the teacher-student "
    "discrepancy through per-image teacher gradients normalized to --generator_clip_norm and "
    "noised with the same sigma (accounted; use with --distillation_loss=l1). teacher (DAFL) / "
    "adversarial (DFAD; use with --distillation_loss=l1): query the teacher without noise; NOT "
    "private, reported as epsilon = inf (unless the teacher itself is DP).")
STUDENT_STEPS_PER_ITERATION = flags.DEFINE_integer(
    "student_steps_per_iteration", 1, "Student steps per alternation.")
GENERATOR_STEPS_PER_ITERATION = flags.DEFINE_integer(
    "generator_steps_per_iteration", 1, "Generator steps per alternation.")
GENERATOR_WARMUP_STEPS = flags.DEFINE_integer(
    "generator_warmup_steps", 300, "Generator-only diversity steps before distillation "
    "(student mode; free in privacy).")
LOSS_WEIGHTS = {
    field: flags.DEFINE_float(f"generator_{field}_weight", default,
                              f"Weight of the {field} term of the student-mode generator loss.")
    for field, default in (
        (f.name, f.default) for f in distiller.dataclasses.fields(distiller.GeneratorLossWeights))
}
INPUT_MIXUP = flags.DEFINE_bool(
    "input_mixup", True, "Student steps see generated images mixed with a neighbour (random "
    "weights): more varied inputs; no privacy cost.")
LATENT_DIM = flags.DEFINE_integer("latent_dim", 100, "Generator latent dimension.")
GENERATOR_WIDTH = flags.DEFINE_integer("generator_width", 16, "Generator width.")
STUDENT_LEARNING_RATE = flags.DEFINE_float("student_learning_rate", 1e-3, "Student Adam rate.")
GENERATOR_LEARNING_RATE = flags.DEFINE_float("generator_learning_rate", 1e-3,
                                             "Generator Adam rate.")
JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile", "auto", ["auto", "true", "false"],
    "XLA-compile the train step. auto: on with a GPU, off on CPU (measured faster; BUILD.md).")
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"],
    "tf.distribute strategy. mirrored: all local GPUs (or CPUs) of this machine; multi_worker: "
    "MultiWorkerMirroredStrategy over the machines in TF_CONFIG (BUILD.md). --batch_size is the "
    "global batch; every row gets exactly one noise draw of std sigma*C whatever the devices.")
MIXED_PRECISION = flags.DEFINE_bool(
    "mixed_precision", False, "Student and generator compute in float16 (mixed_float16, with "
    "loss scaling); the rows, their normalization and the noise stay in float32. For GPUs: on "
    "CPU it is slower.")
NOISE_SEED = flags.DEFINE_integer(
    "noise_seed", None, "Fixed seed for the privacy noise, for tests only: anyone who knows it "
    "can remove the noise. Default: OS entropy.")
STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", 100, "Iterations per Keras epoch.")
LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Log a progress line every N private steps.")
SAMPLE_EVERY = flags.DEFINE_integer("sample_every", 200, "Refresh samples.png every N steps.")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 200, "Checkpoint every N steps.")

FINISHED_MARKER = "privacy_report.json"
CONFIG_FILE = "run_config.json"
# Flags that change what a run computes: a resumed run must match them.
RUN_FLAGS = ("strategy", "teacher", "teacher_privacy", "teacher_aggregation", "student_mechanism",
             "student_optimizer", "generator_clip_norm", "mixed_precision", "teacher_outputs", "teacher_input_range", "dataset", "epsilon", "delta",
             "noise_multiplier", "clip_norm", "batch_size", "steps", "distillation_loss",
             "temperature", "generator_mode", "student_steps_per_iteration",
             "generator_steps_per_iteration", "generator_warmup_steps", "input_mixup", "latent_dim",
             "generator_width", "student_architecture", "student_width",
             "student_learning_rate", "generator_learning_rate", "seed",
             *(f"generator_{field}_weight" for field in LOSS_WEIGHTS))


def validate_flags():
  require = cli.require
  require(TEACHER.value, "--teacher is required")
  require(EPSILON.value is None or EPSILON.value > 0,
          f"--epsilon must be > 0, got {EPSILON.value}")
  require(0 < DELTA.value < 1, f"--delta must be in (0, 1), got {DELTA.value}")
  require(CLIP_NORM.value > 0 and math.isfinite(CLIP_NORM.value),
          f"--clip_norm must be > 0, got {CLIP_NORM.value}")
  require(BATCH_SIZE.value >= 1, f"--batch_size must be >= 1, got {BATCH_SIZE.value}")
  require(STEPS.value >= 1, f"--steps must be >= 1, got {STEPS.value}")
  require(TEMPERATURE.value > 0, "--temperature must be > 0")
  require(STUDENT_STEPS_PER_ITERATION.value >= 1, "--student_steps_per_iteration must be >= 1")
  require(GENERATOR_STEPS_PER_ITERATION.value >= 0,
          "--generator_steps_per_iteration must be >= 0")
  require(STEPS.value % STUDENT_STEPS_PER_ITERATION.value == 0,
          "--steps must be a multiple of --student_steps_per_iteration")
  require(GENERATOR_WARMUP_STEPS.value >= 0, "--generator_warmup_steps must be >= 0")
  require(LATENT_DIM.value >= 1 and GENERATOR_WIDTH.value >= 1,
          "--latent_dim and --generator_width must be >= 1")
  require(STUDENT_LEARNING_RATE.value > 0 and GENERATOR_LEARNING_RATE.value > 0,
          "learning rates must be > 0")
  for name in ("steps_per_epoch", "log_every", "sample_every", "checkpoint_every"):
    require(flags.FLAGS[name].value >= 1, f"--{name} must be >= 1")
  require((EPSILON.value is None) != (NOISE_MULTIPLIER.value is None),
          "pass exactly one of --epsilon (calibrates the noise) and --noise_multiplier")
  require(NOISE_MULTIPLIER.value is None or NOISE_MULTIPLIER.value >= 0,
          f"--noise_multiplier must be >= 0, got {NOISE_MULTIPLIER.value}")
  require(GENERATOR_CLIP_NORM.value > 0 and math.isfinite(GENERATOR_CLIP_NORM.value),
          f"--generator_clip_norm must be > 0, got {GENERATOR_CLIP_NORM.value}")


def teacher_training_release():
  """The DP teacher's dp_sgd Release from its teacher.json, or None for an ordinary teacher."""
  path = TEACHER_PRIVACY.value
  if path == "none":
    return None
  if path == "auto":
    path = os.path.join(os.path.dirname(os.path.abspath(TEACHER.value.rstrip("/"))),
                        "teacher.json")
    if not os.path.isfile(path):
      return None
  elif not os.path.isfile(path):
    raise DpdfdError(f"--teacher_privacy: {path} not found")
  try:
    record = cli.read_json(path)
  except ValueError:
    raise DpdfdError(f"--teacher_privacy: {path} is not valid JSON") from None
  privacy = record.get("privacy") if isinstance(record, dict) else None
  if not (isinstance(privacy, dict) and privacy.get("private")):
    if TEACHER_PRIVACY.value != "auto":
      raise DpdfdError(f"--teacher_privacy: {path} does not describe a DP-trained teacher")
    return None
  try:
    release = accounting.release_from_summary(privacy, name="teacher weights (DP-SGD)")
  except (KeyError, TypeError, ValueError) as error:
    raise DpdfdError(f"--teacher_privacy: {path} has an unreadable privacy record "
                     f"({error})") from None
  if release.unit != "dp_sgd":
    raise DpdfdError(f"--teacher_privacy: {path} does not describe DP-SGD training")
  return release


def planned_noise_multiplier(model_releases, teacher_training):
  """sigma: the flag, or the smallest that meets --epsilon over the planned releases.

  A DP teacher already within the target needs no noise at all (post-processing). Extreme
  values the accountant cannot handle are user errors, caught here before any file is written.
  """
  try:
    if NOISE_MULTIPLIER.value is not None:
      accounting.epsilon([dataclasses.replace(r, noise_multiplier=NOISE_MULTIPLIER.value)
                          for r in model_releases], DELTA.value)
      return NOISE_MULTIPLIER.value
    if teacher_training is not None and (
        accounting.epsilon(teacher_training, DELTA.value) <= EPSILON.value):
      return 0.0
    return accounting.calibrate_noise_multiplier(EPSILON.value, DELTA.value, model_releases)
  except (ValueError, OverflowError) as error:
    raise DpdfdError(f"cannot account for this run (--epsilon/--noise_multiplier, --delta, "
                     f"--batch_size, --steps): {error}") from None


def use_jit_compile():
  if JIT_COMPILE.value == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return JIT_COMPILE.value == "true"


def distribution_strategy():
  if STRATEGY.value == "mirrored":
    return tf.distribute.MirroredStrategy()
  if STRATEGY.value == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief(strategy):
  """Only the chief worker writes to --output_dir (multi_worker); the others write to scratch."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or STRATEGY.value != "multi_worker":
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type in (None, "chief") or (
      task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def student_optimizer(noise_multiplier):
  rate = STUDENT_LEARNING_RATE.value
  if STUDENT_MECHANISM.value == "dp_optimizer":
    # pylint: disable=g-import-not-at-top
    from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras
    optimizer_class = (dp_optimizer_keras.DPKerasAdamOptimizer if STUDENT_OPTIMIZER.value == "adam"
                       else dp_optimizer_keras.DPKerasSGDOptimizer)
    extra = {} if STUDENT_OPTIMIZER.value == "adam" else {"momentum": 0.9}
    return optimizer_class(l2_norm_clip=CLIP_NORM.value, noise_multiplier=noise_multiplier,
                           num_microbatches=None, learning_rate=rate, **extra)
  if STUDENT_OPTIMIZER.value == "adam":
    return keras.optimizers.Adam(rate)
  return keras.optimizers.SGD(rate, momentum=0.9)


def build_model(info, teacher, noise_multiplier, teacher_training=None):
  keras.utils.set_random_seed(cli.SEED.value)
  student = architectures.build_classifier(cli.STUDENT_ARCHITECTURE.value, info.image_shape,
                                           info.num_classes, width=cli.STUDENT_WIDTH.value,
                                           name="student")
  generator = architectures.build_generator(info.image_shape, LATENT_DIM.value,
                                            GENERATOR_WIDTH.value)
  weights = distiller.GeneratorLossWeights(
      **{field: flag.value for field, flag in LOSS_WEIGHTS.items()})
  model = distiller.DPDFD(
      teacher, student, generator, batch_size=BATCH_SIZE.value, clip_norm=CLIP_NORM.value,
      noise_multiplier=noise_multiplier, distillation_loss=DISTILLATION_LOSS.value,
      temperature=TEMPERATURE.value, generator_mode=GENERATOR_MODE.value,
      student_steps_per_iteration=STUDENT_STEPS_PER_ITERATION.value,
      generator_steps_per_iteration=GENERATOR_STEPS_PER_ITERATION.value,
      generator_warmup_steps=GENERATOR_WARMUP_STEPS.value, generator_loss_weights=weights,
      generator_clip_norm=GENERATOR_CLIP_NORM.value, student_mechanism=STUDENT_MECHANISM.value,
      teacher_aggregation=TEACHER_AGGREGATION.value, teacher_training=teacher_training,
      max_private_steps=STEPS.value, input_mixup=INPUT_MIXUP.value, seed=cli.SEED.value,
      noise_seed=NOISE_SEED.value)
  model.compile(student_optimizer=student_optimizer(noise_multiplier),
                generator_optimizer=keras.optimizers.Adam(GENERATOR_LEARNING_RATE.value),
                jit_compile=use_jit_compile())
  return model


def require_finite_target(model, teacher_training):
  """--epsilon needs every teacher path accounted, or a DP teacher."""
  cli.require(EPSILON.value is None or not model.generator_queries_teacher or
              teacher_training is not None,
              f"--generator_mode={GENERATOR_MODE.value} queries the teacher without noise, so no "
              "epsilon can be met; use --generator_mode=student or dp_teacher_guided, or pass "
              "--noise_multiplier")


def _interrupt_on_sigterm():
  """SIGTERM (preemption, `kill`) takes the Ctrl-C path: checkpoint, then exit."""

  def handler(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, handler)


def write_report(model, status, output_dir):
  """Writes privacy_report.json from the model's private step counter (never from the plan)."""
  report = model.privacy_report(
      DELTA.value, status=status, generator_mode=GENERATOR_MODE.value, target_epsilon=EPSILON.value,
      planned_steps=STEPS.value, noise_seed="fixed (test only)" if NOISE_SEED.value is not None
      else "OS entropy", teacher=TEACHER.value,
      released=["student/", "generator/", "samples.png", "metrics.jsonl", "privacy_report.json"],
      keep_private=["checkpoints/ (noise generator state)", "the teacher"])
  cli.write_json(os.path.join(output_dir, FINISHED_MARKER), report)
  return report


def main(argv):
  del argv
  cli.configure_logging()
  validate_flags()
  strategy = distribution_strategy()  # before other TensorFlow work (multi_worker needs it)
  with strategy.scope():
    run_distillation(strategy)


def run_distillation(strategy):
  output_dir = cli.OUTPUT_DIR.value
  cli.require(BATCH_SIZE.value % strategy.num_replicas_in_sync == 0,
              f"--batch_size={BATCH_SIZE.value} must be a multiple of the "
              f"{strategy.num_replicas_in_sync} replicas")
  info = data.dataset_info(cli.DATASET.value)
  resume = cli.check_output_dir(output_dir, FINISHED_MARKER, cli.OVERWRITE.value, resumable=True)
  config = cli.flag_values(RUN_FLAGS)
  if resume:
    config_path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.isfile(config_path) or cli.read_json(config_path) != config:
      raise DpdfdError(f"{output_dir} holds an unfinished run with different flags; rerun with "
                       "the same flags to resume it, or pass --overwrite")
  teacher = teachers.load_classifier(
      TEACHER.value, info.image_shape, info.num_classes, TEACHER_OUTPUTS.value,
      teachers.InputRange.parse(TEACHER_INPUT_RANGE.value))
  teacher_training = teacher_training_release()
  if MIXED_PRECISION.value:  # before any student or generator layer is built
    keras.mixed_precision.set_global_policy("mixed_float16")
  # The model's own description of its releases plans the calibration: one source of truth.
  try:
    planning_model = build_model(info, teacher, 1.0, teacher_training)
  except ValueError as error:
    raise DpdfdError(str(error)) from None
  require_finite_target(planning_model, teacher_training)
  noise_multiplier = planned_noise_multiplier(planning_model.release(STEPS.value),
                                              teacher_training)
  chief = is_chief(strategy)
  if not resume and chief:
    cli.clear_output_dir(output_dir)
    cli.write_json(os.path.join(output_dir, CONFIG_FILE), config)

  model = build_model(info, teacher, noise_multiplier, teacher_training)
  if teacher_training is not None:
    cli.log().info("the teacher was trained with DP (epsilon %s at delta %g): the run is also "
                   "bounded by it", accounting.format_epsilon(
                       accounting.epsilon(teacher_training, DELTA.value)), DELTA.value)
  planned = model.epsilon(DELTA.value, STEPS.value)
  if math.isinf(planned):
    cli.log().warning("THIS RUN IS NOT PRIVATE (epsilon = inf): %s", model.not_private_reason())
  elif model.noise_seed_is_fixed:
    cli.log().warning("--noise_seed is fixed: anyone who knows it can remove the noise")
  cli.log().info("noise multiplier sigma = %.4g; planned %d private steps spend epsilon = %s "
               "(delta = %g)", noise_multiplier, STEPS.value, accounting.format_epsilon(planned),
               DELTA.value)

  checkpoint = model.checkpoint()
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
  if not chief:  # every worker resumes from the chief's checkpoints, writes apart
    output_dir = tempfile.mkdtemp(prefix="dpdfd_worker_")
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"),
                                       max_to_keep=2)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    cli.log().info("resumed from %s at private step %d", latest,
                   int(model.private_steps.numpy()))

  grid_latents = tf.random.stateless_normal([40, LATENT_DIM.value], seed=(cli.SEED.value, 1))
  run_callbacks = [
      callbacks.StopOnNonFinite(),
      callbacks.PrivacyProgress(DELTA.value, LOG_EVERY.value,
                                os.path.join(output_dir, "metrics.jsonl"), STEPS.value),
      callbacks.SampleGrid(os.path.join(output_dir, "samples.png"), grid_latents,
                           SAMPLE_EVERY.value, list(info.class_names)),
      callbacks.Checkpointing(manager, CHECKPOINT_EVERY.value),
  ]
  remaining = model.remaining_iterations()
  warmup_left = GENERATOR_WARMUP_STEPS.value - int(model.warmup_steps_done.numpy())
  if remaining and warmup_left > 0 and not model.generator_queries_teacher:
    cli.log().info("generator warm-up: %d diversity steps (no teacher, no privacy cost)",
                   warmup_left)
  if remaining:
    _interrupt_on_sigterm()
    epochs = math.ceil(remaining / STEPS_PER_EPOCH.value)
    try:
      model.fit(steps_per_epoch=min(STEPS_PER_EPOCH.value, remaining), epochs=epochs,
                callbacks=run_callbacks, verbose=1 if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
      manager.save(checkpoint_number=int(model.private_steps.numpy()))
      spent = accounting.format_epsilon(model.epsilon(DELTA.value))
      print(f"interrupted at private step {int(model.private_steps.numpy())}; checkpoint saved; "
            f"epsilon spent so far: {spent}. Rerun the same command to resume.", file=sys.stderr)
      sys.exit(130)
    except NonFiniteLossError as error:
      # Every step that ran is spent: the report says so even though no model is exported.
      write_report(model, f"stopped: {error}", output_dir)
      raise

  export.export_student(model.student, os.path.join(output_dir, "student"))
  export.export_generator(model.generator, model.student, os.path.join(output_dir, "generator"))
  report = write_report(model, "finished", output_dir)
  print("privacy report:", accounting.describe(report))
  print(f"student: {os.path.join(output_dir, 'student')}  generator: "
        f"{os.path.join(output_dir, 'generator')}  samples: "
        f"{os.path.join(output_dir, 'samples.png')}")


if __name__ == "__main__":
  cli.run(main)
