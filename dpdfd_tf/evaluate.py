r"""Prints a classifier's accuracy on one split (teachers and students alike).

  python -m dpdfd_tf.evaluate --model=runs/dpdfd/student --dataset=fashion_mnist
  python -m dpdfd_tf.evaluate --model=runs/dpdfd/student --dataset=fashion_mnist \
      --data_dir=splits.npz --split=validation   # choosing hyper-parameters: never on test

A validation split comes from an .npz with x_validation/y_validation (``data.save_npz``).
"""

from absl import flags

from dpdfd_tf import cli  # defines the shared flags; sets up tf.keras (see _compat)
from dpdfd_tf import classification
from dpdfd_tf import data
from dpdfd_tf import teachers

MODEL = flags.DEFINE_string("model", None, "SavedModel directory, .keras or .h5 file.")
MODEL_OUTPUTS = flags.DEFINE_enum("model_outputs", "auto", list(teachers.OUTPUT_KINDS),
                                  "Whether the model returns logits or probabilities.")
MODEL_INPUT_RANGE = flags.DEFINE_string("model_input_range", "0,1",
                                        "Input range the model expects (see distill).")
SPLIT = flags.DEFINE_enum("split", "test", list(data.SPLITS), "Split to evaluate on. "
                          "validation needs --data_dir with an .npz that has one.")


def main(argv):
  del argv
  cli.require(MODEL.value, "--model is required")
  info = data.dataset_info(cli.DATASET.value)
  model = teachers.load_classifier(MODEL.value, info.image_shape, info.num_classes,
                                   MODEL_OUTPUTS.value,
                                   teachers.InputRange.parse(MODEL_INPUT_RANGE.value),
                                   name="model")
  images, labels = data.load(cli.DATASET.value, SPLIT.value, cli.DATA_DIR.value)
  value = classification.accuracy(model, images, labels)
  print(f"{SPLIT.value} accuracy: {value:.4f} ({MODEL.value} on {cli.DATASET.value}, "
        f"{len(labels)} images)")


if __name__ == "__main__":
  cli.run(main)
