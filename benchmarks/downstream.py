r"""Downstream classifier: trained only on a synthetic dataset, tested on the real test set.

  python -m dpdfd_tf.generate --generator=benchmarks/runs/student_eps10/generator \
      --num_samples=60000 --output=benchmarks/runs/downstream/student_eps10.npz
  python -m benchmarks.downstream --train=benchmarks/runs/downstream/student_eps10.npz \
      --epochs=5 --width=16

The npz is ``dpdfd_tf.generate``'s output: images from a DP generator, labelled by the DP
student. Training on it is post-processing of the run's releases, so the classifier has the
run's epsilon. Only the test split of --dataset (the real one) is read from the private side, to
measure the accuracy. Prints ``test accuracy: <fraction>``.
"""

from absl import flags

from dpdfd_tf import cli  # defines the shared flags; sets up tf.keras (see _compat)
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data

TRAIN = flags.DEFINE_string("train", None, "Synthetic training set: an .npz with images/labels "
                            "(dpdfd_tf.generate's output).")
ARCHITECTURE = flags.DEFINE_enum("architecture", "small_cnn", ["lenet5", "small_cnn", "resnet"],
                                 "Classifier architecture.")
WIDTH = flags.DEFINE_integer("width", 16, "Classifier width.", lower_bound=1)
EPOCHS = flags.DEFINE_integer("epochs", 5, "Training epochs.", lower_bound=1)
CLASSIFIER_BATCH_SIZE = flags.DEFINE_integer("classifier_batch_size", 128, "Training batch size.",
                                             lower_bound=1)


def main(argv):
  del argv
  cli.require(TRAIN.value, "--train is required")
  info = data.dataset_info(cli.DATASET.value)
  images, labels = data.load(cli.DATASET.value, "train", TRAIN.value)
  test_images, test_labels = data.load(cli.DATASET.value, "test", cli.DATA_DIR.value)
  model = architectures.build_classifier(ARCHITECTURE.value, info.image_shape, info.num_classes,
                                         width=WIDTH.value, name="downstream")
  classification.train_classifier(model, images, labels, epochs=EPOCHS.value,
                                  batch_size=CLASSIFIER_BATCH_SIZE.value, seed=cli.SEED.value)
  value = classification.accuracy(model, test_images, test_labels)
  print(f"test accuracy: {value:.4f} ({ARCHITECTURE.value} width {WIDTH.value}, {EPOCHS.value} "
        f"epochs on {len(labels)} synthetic samples of {TRAIN.value}; {cli.DATASET.value}, "
        f"{len(test_labels)} real test images)")


if __name__ == "__main__":
  cli.run(main)
