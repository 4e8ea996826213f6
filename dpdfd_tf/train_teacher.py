r"""Trains a teacher classifier on the private data: the only step that reads it.

  python -m dpdfd_tf.train_teacher --flagfile=flags/fashion_mnist.cfg --output_dir=runs/teacher

Writes ``model/`` (Keras SavedModel: [0, 1] images -> logits) and ``teacher.json`` (dataset,
architecture, input range, output kind, test accuracy).
"""

import os
import time

from absl import flags

from dpdfd_tf import cli  # defines the shared flags; sets up tf.keras (see _compat)
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data

EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs.")
TEACHER_BATCH_SIZE = flags.DEFINE_integer("teacher_batch_size", 128, "Training batch size.")
TEACHER_LEARNING_RATE = flags.DEFINE_float("teacher_learning_rate", 1e-3, "Adam learning rate.")

FINISHED_MARKER = "teacher.json"


def main(argv):
  del argv
  cli.configure_logging()
  cli.require(EPOCHS.value >= 1, f"--epochs must be >= 1, got {EPOCHS.value}")
  cli.require(TEACHER_BATCH_SIZE.value >= 1, "--teacher_batch_size must be >= 1")
  cli.require(TEACHER_LEARNING_RATE.value > 0, "--teacher_learning_rate must be > 0")
  info = data.dataset_info(cli.DATASET.value)
  cli.check_output_dir(cli.OUTPUT_DIR.value, FINISHED_MARKER, cli.OVERWRITE.value)
  train_images, train_labels = data.load(cli.DATASET.value, "train", cli.DATA_DIR.value)
  test_images, test_labels = data.load(cli.DATASET.value, "test", cli.DATA_DIR.value)
  cli.clear_output_dir(cli.OUTPUT_DIR.value)

  model = architectures.build_classifier(cli.TEACHER_ARCHITECTURE.value, info.image_shape,
                                         info.num_classes, width=cli.TEACHER_WIDTH.value,
                                         name="teacher")
  start = time.time()
  classification.train_classifier(model, train_images, train_labels, epochs=EPOCHS.value,
                                  batch_size=TEACHER_BATCH_SIZE.value,
                                  learning_rate=TEACHER_LEARNING_RATE.value, seed=cli.SEED.value)
  seconds = time.time() - start
  test_accuracy = classification.accuracy(model, test_images, test_labels)
  model_path = os.path.join(cli.OUTPUT_DIR.value, "model")
  model.save(model_path, include_optimizer=False)
  cli.write_json(os.path.join(cli.OUTPUT_DIR.value, FINISHED_MARKER), {
      "dataset": cli.DATASET.value, "architecture": cli.TEACHER_ARCHITECTURE.value,
      "width": cli.TEACHER_WIDTH.value, "epochs": EPOCHS.value, "input_range": "0,1",
      "outputs": "logits", "test_accuracy": test_accuracy, "train_seconds": round(seconds, 1),
      "model": model_path, "private": False,
      "note": "trained without differential privacy: keep it, and anything derived from it "
              "without DPDFD, as private as the data"})
  cli.log().info("teacher saved to %s", model_path)
  print(f"teacher test accuracy: {test_accuracy:.4f} ({cli.DATASET.value}, "
        f"{len(test_labels)} test images)")


if __name__ == "__main__":
  cli.run(main)
