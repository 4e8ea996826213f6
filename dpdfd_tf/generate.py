r"""Writes a labeled synthetic dataset from an exported DPDFD generator.

  python -m dpdfd_tf.generate --generator=runs/dpdfd/generator --num_samples=10000 \
      --output=runs/synthetic.npz

The npz holds ``images`` (float32 [N, H, W, C] in [0, 1]) and ``labels`` (the student's classes,
int64); it loads with ``--data_dir=runs/synthetic.npz`` anywhere a dataset is read. A PNG preview
is written next to it. Samples of a private run are post-processing: they cost no extra privacy.
"""

import os

from absl import flags
import numpy as np
import tensorflow as tf

from dpdfd_tf import cli  # sets up tf.keras (see _compat)
from dpdfd_tf import visualize
from dpdfd_tf.errors import DpdfdError

GENERATOR = flags.DEFINE_string("generator", None, "Exported generator SavedModel directory.")
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 10000, "Number of samples.")
OUTPUT = flags.DEFINE_string("output", None, "Output .npz path (default: "
                             "<generator>/../synthetic.npz).")
GENERATE_BATCH_SIZE = flags.DEFINE_integer("generate_batch_size", 1000, "Samples per call.")


def load_generator(path):
  if not os.path.isfile(os.path.join(path or "", "saved_model.pb")):
    raise DpdfdError(f"{path} is not an exported generator (no saved_model.pb)")
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DpdfdError(f"cannot load generator {path}: {str(e).splitlines()[0]}") from None
  if "serving_default" not in loaded.signatures or "from_latents" not in loaded.signatures:
    raise DpdfdError(f"{path} lacks the generator signatures (serving_default, from_latents)")
  return loaded


def sample(loaded, num_samples, seed, batch_size):
  """Draws ``num_samples`` (images, labels) in batches, reproducibly for a given seed."""
  signature = loaded.signatures["serving_default"]
  images, labels = [], []
  for index, start in enumerate(range(0, num_samples, batch_size)):
    count = min(batch_size, num_samples - start)
    out = signature(num_samples=tf.constant(count, tf.int32),
                    seed=tf.constant(seed * 1_000_003 + index, tf.int64))
    images.append(out["images"].numpy())
    labels.append(out["labels"].numpy())
  return np.concatenate(images), np.concatenate(labels)


def main(argv):
  del argv
  cli.require(GENERATOR.value, "--generator is required")
  cli.require(NUM_SAMPLES.value >= 1, f"--num_samples must be >= 1, got {NUM_SAMPLES.value}")
  cli.require(GENERATE_BATCH_SIZE.value >= 1, "--generate_batch_size must be >= 1")
  output = OUTPUT.value or os.path.join(os.path.dirname(os.path.abspath(GENERATOR.value)),
                                        "synthetic.npz")
  cli.require(output.endswith(".npz"), f"--output must end in .npz, got {output}")
  cli.require(not os.path.exists(output) or cli.OVERWRITE.value,
              f"{output} exists; pass --overwrite to replace it")
  loaded = load_generator(GENERATOR.value)
  images, labels = sample(loaded, NUM_SAMPLES.value, cli.SEED.value, GENERATE_BATCH_SIZE.value)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  temporary = output[:-len(".npz")] + ".partial.npz"
  np.savez_compressed(temporary, images=images.astype(np.float32), labels=labels.astype(np.int64))
  os.replace(temporary, output)
  preview = output[:-len(".npz")] + ".png"
  visualize.save_sample_grid(images[:40], labels[:40], preview, title="synthetic samples")
  counts = np.bincount(labels, minlength=1)
  print(f"wrote {len(labels)} samples to {output} (preview {preview}); label counts: "
        f"{counts.tolist()}")


if __name__ == "__main__":
  cli.run(main)
