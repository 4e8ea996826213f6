r"""Trains a teacher on the private data: the only step that reads it.

  python -m dpdfd_tf.train_teacher --flagfile=flags/fashion_mnist.cfg --output_dir=runs/teacher
  # DP teacher (DP-SGD with tensorflow-privacy), or an ensemble of M teachers on disjoint shards:
  python -m dpdfd_tf.train_teacher --flagfile=flags/fashion_mnist.cfg --dp_epsilon=10 ...
  python -m dpdfd_tf.train_teacher --flagfile=flags/fashion_mnist.cfg --num_teachers=250 ...

Writes ``model/`` (Keras SavedModel: [0, 1] images -> logits, [B, K]; an ensemble returns one
row per teacher, [B, M, K]) and ``teacher.json`` (dataset, architecture, input range, output
kind, test accuracy and, for a DP teacher, its privacy report; ``distill`` reads it to bound the
run by the teacher's epsilon).
"""

import os
import time

from absl import flags

from dpdfd_tf import cli  # defines the shared flags; sets up tf.keras (see _compat)
from dpdfd_tf import accounting
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data
from dpdfd_tf._compat import keras

EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs (single or DP teacher).")
TEACHER_BATCH_SIZE = flags.DEFINE_integer(
    "teacher_batch_size", 128, "Training batch size (the expected Poisson batch with DP).")
TEACHER_LEARNING_RATE = flags.DEFINE_float("teacher_learning_rate", 1e-3, "Adam learning rate.")
NUM_TEACHERS = flags.DEFINE_integer(
    "num_teachers", 1, "M > 1 trains M teachers on disjoint shards of the data (one record "
    "influences one teacher) and saves them as one ensemble model (architecture ensemble_mlp).")
ENSEMBLE_EPOCHS = flags.DEFINE_integer("ensemble_epochs", 60, "Epochs of each ensemble member "
                                       "over its own shard.")
ENSEMBLE_BATCH_SIZE = flags.DEFINE_integer("ensemble_batch_size", 32, "Records per member per "
                                           "step.")
ENSEMBLE_LEARNING_RATE = flags.DEFINE_float("ensemble_learning_rate", 3e-3, "Adam rate of the "
                                            "ensemble members.")
DP_EPSILON = flags.DEFINE_float(
    "dp_epsilon", None, "Train the teacher with DP-SGD (tensorflow-privacy) to this epsilon; "
    "the noise is calibrated for --epochs of Poisson-sampled batches of --teacher_batch_size.")
DP_DELTA = flags.DEFINE_float("dp_delta", 1e-5, "delta of the DP teacher.")
DP_CLIP_NORM = flags.DEFINE_float("dp_clip_norm", 1.0, "Per-example gradient clip norm (DP).")

FINISHED_MARKER = "teacher.json"


def validate_flags():
  require = cli.require
  require(EPOCHS.value >= 1, f"--epochs must be >= 1, got {EPOCHS.value}")
  require(TEACHER_BATCH_SIZE.value >= 1, "--teacher_batch_size must be >= 1")
  require(TEACHER_LEARNING_RATE.value > 0, "--teacher_learning_rate must be > 0")
  require(NUM_TEACHERS.value >= 1, f"--num_teachers must be >= 1, got {NUM_TEACHERS.value}")
  require(ENSEMBLE_EPOCHS.value >= 1 and ENSEMBLE_BATCH_SIZE.value >= 1,
          "--ensemble_epochs and --ensemble_batch_size must be >= 1")
  require(ENSEMBLE_LEARNING_RATE.value > 0, "--ensemble_learning_rate must be > 0")
  require(DP_EPSILON.value is None or DP_EPSILON.value > 0,
          f"--dp_epsilon must be > 0, got {DP_EPSILON.value}")
  require(0 < DP_DELTA.value < 1, f"--dp_delta must be in (0, 1), got {DP_DELTA.value}")
  require(DP_CLIP_NORM.value > 0, f"--dp_clip_norm must be > 0, got {DP_CLIP_NORM.value}")
  require(DP_EPSILON.value is None or NUM_TEACHERS.value == 1,
          "--dp_epsilon trains one DP teacher; it cannot be combined with --num_teachers > 1")


def train_single(info, train_images, train_labels):
  model = architectures.build_classifier(cli.TEACHER_ARCHITECTURE.value, info.image_shape,
                                         info.num_classes, width=cli.TEACHER_WIDTH.value,
                                         name="teacher")
  classification.train_classifier(model, train_images, train_labels, epochs=EPOCHS.value,
                                  batch_size=TEACHER_BATCH_SIZE.value,
                                  learning_rate=TEACHER_LEARNING_RATE.value, seed=cli.SEED.value)
  return model, {"architecture": cli.TEACHER_ARCHITECTURE.value, "width": cli.TEACHER_WIDTH.value,
                 "epochs": EPOCHS.value, "private": False}


def dp_release(num_records, noise_multiplier=0.0):
  steps = EPOCHS.value * (num_records // TEACHER_BATCH_SIZE.value)
  return accounting.Release(noise_multiplier, TEACHER_BATCH_SIZE.value, steps, unit="dp_sgd",
                            dataset_size=num_records, clip_norm=DP_CLIP_NORM.value,
                            name="teacher weights (DP-SGD)")


def train_dp(info, train_images, train_labels):
  release = dp_release(len(train_images))
  sigma = accounting.calibrate_noise_multiplier(DP_EPSILON.value, DP_DELTA.value, release)
  release = dp_release(len(train_images), sigma)
  cli.log().info("DP-SGD: sigma = %.4g for %d steps of expected batch %d (q = %.4g)", sigma,
                 release.steps, release.batch_size, release.batch_size / len(train_images))
  keras.utils.set_random_seed(cli.SEED.value)
  model = architectures.build_classifier(cli.TEACHER_ARCHITECTURE.value, info.image_shape,
                                         info.num_classes, width=cli.TEACHER_WIDTH.value,
                                         name="teacher")
  model = classification.train_dp_classifier(
      model, train_images, train_labels, noise_multiplier=sigma, clip_norm=DP_CLIP_NORM.value,
      batch_size=TEACHER_BATCH_SIZE.value, steps=release.steps,
      learning_rate=TEACHER_LEARNING_RATE.value)
  report = accounting.privacy_report(release, DP_DELTA.value, status="finished",
                                     target_epsilon=DP_EPSILON.value)
  return model, {"architecture": cli.TEACHER_ARCHITECTURE.value, "width": cli.TEACHER_WIDTH.value,
                 "epochs": EPOCHS.value, "private": True, "privacy": report}


def train_ensemble(info, train_images, train_labels):
  model = architectures.build_teacher_ensemble(
      "ensemble_mlp", info.image_shape, info.num_classes, NUM_TEACHERS.value,
      width=cli.TEACHER_WIDTH.value)
  shards = classification.train_ensemble(
      model, train_images, train_labels, epochs=ENSEMBLE_EPOCHS.value,
      batch_size=ENSEMBLE_BATCH_SIZE.value, learning_rate=ENSEMBLE_LEARNING_RATE.value,
      seed=cli.SEED.value, log=cli.log().info)
  return model, {"architecture": "ensemble_mlp", "width": cli.TEACHER_WIDTH.value,
                 "epochs": ENSEMBLE_EPOCHS.value, "num_teachers": NUM_TEACHERS.value,
                 "records_per_teacher": int(shards.shape[1]), "private": False}


def main(argv):
  del argv
  cli.configure_logging()
  validate_flags()
  info = data.dataset_info(cli.DATASET.value)
  cli.check_output_dir(cli.OUTPUT_DIR.value, FINISHED_MARKER, cli.OVERWRITE.value)
  train_images, train_labels = data.load(cli.DATASET.value, "train", cli.DATA_DIR.value)
  test_images, test_labels = data.load(cli.DATASET.value, "test", cli.DATA_DIR.value)
  cli.require(NUM_TEACHERS.value <= len(train_images),
              f"--num_teachers={NUM_TEACHERS.value} exceeds the {len(train_images)} records")
  cli.require(TEACHER_BATCH_SIZE.value <= len(train_images),
              f"--teacher_batch_size exceeds the {len(train_images)} records")
  cli.clear_output_dir(cli.OUTPUT_DIR.value)

  start = time.time()
  if NUM_TEACHERS.value > 1:
    model, details = train_ensemble(info, train_images, train_labels)
  elif DP_EPSILON.value is not None:
    model, details = train_dp(info, train_images, train_labels)
  else:
    model, details = train_single(info, train_images, train_labels)
  seconds = time.time() - start
  if NUM_TEACHERS.value > 1:
    test_accuracy, members = classification.ensemble_accuracies(model, test_images, test_labels)
    details["member_test_accuracy"] = {"mean": float(members.mean()), "min": float(members.min()),
                                       "max": float(members.max())}
  else:
    test_accuracy = classification.accuracy(model, test_images, test_labels)
  model_path = os.path.join(cli.OUTPUT_DIR.value, "model")
  model.save(model_path, include_optimizer=False)
  note = ("trained with DP-SGD: the model and anything computed from it are covered by the "
          "privacy report" if details["private"] else
          "trained without differential privacy: keep it, and anything derived from it "
          "without DPDFD, as private as the data")
  cli.write_json(os.path.join(cli.OUTPUT_DIR.value, FINISHED_MARKER), {
      "dataset": cli.DATASET.value, **details, "input_range": "0,1", "outputs": "logits",
      "test_accuracy": test_accuracy, "train_seconds": round(seconds, 1), "model": model_path,
      "note": note})
  cli.log().info("teacher saved to %s", model_path)
  kind = f"ensemble of {NUM_TEACHERS.value} (averaged vote) " if NUM_TEACHERS.value > 1 else ""
  print(f"teacher test accuracy: {test_accuracy:.4f} {kind}({cli.DATASET.value}, "
        f"{len(test_labels)} test images)")
  if details["private"]:
    print("privacy report:", accounting.describe(details["privacy"]))


if __name__ == "__main__":
  cli.run(main)
