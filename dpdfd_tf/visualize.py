"""Pictures: a grid of generated samples labeled with the student's answers."""

import os
import tempfile

import numpy as np


def save_sample_grid(images, labels, path, class_names=None, columns=10, title=None):
  """Writes a PNG grid of [0, 1] images, each titled with its label; atomic (temp + rename)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  labels = np.asarray(labels)
  rows = int(np.ceil(len(images) / columns))
  figure, axes = pyplot.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.25),
                                 squeeze=False)
  for index, axis in enumerate(axes.flat):
    axis.axis("off")
    if index >= len(images):
      continue
    image = images[index]
    axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    label = int(labels[index])
    axis.set_title(class_names[label] if class_names else str(label), fontsize=7)
  if title:
    figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(suffix=".png", dir=directory)
  os.close(handle)
  try:
    figure.savefig(temporary, dpi=80)
    os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
    os.replace(temporary, path)
  finally:
    pyplot.close(figure)
    if os.path.exists(temporary):
      os.remove(temporary)
