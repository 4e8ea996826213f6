"""Datasets as numpy arrays, in the package-wide pixel convention.

Pixel convention: images are float32, NHWC, with values in [0, 1]. Teachers trained by
``train_teacher``, the generator's output, the student and the exported serving signatures all
use it; a teacher trained on another range declares it (``InputRange``) and is fed mapped inputs.

Sources, in the order they are tried for a named dataset:
1. ``data_dir`` if given: a directory with the original IDX files (``train-images-idx3-ubyte[.gz]``
   ...), or an ``.npz`` file (keys ``x_train``/``y_train``/``x_test``/``y_test``, optionally
   ``x_validation``/``y_validation``, or ``images``/``labels`` for a single split such as
   ``generate``'s output).
2. A local copy of the IDX files in a well-known place (Debian's ``dataset-fashion-mnist``
   installs Fashion-MNIST under /usr/share/datasets/fashion-mnist).
3. tensorflow-datasets (downloads; needs the network the first time).
``digits`` (scikit-learn's 8x8 digits, 1,797 images, shipped with scikit-learn) needs no download.

The validation split exists only where an .npz provides it: hold records out of the training split
with ``save_npz`` (the benchmarks do), so that hyper-parameters are chosen without the test split.
"""

import dataclasses
import gzip
import os
import zipfile
import zlib
from typing import Optional, Tuple

import numpy as np

from dpdfd_tf.errors import DpdfdError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  image_shape: Tuple[int, int, int]
  num_classes: int
  class_names: Tuple[str, ...]
  local_dirs: Tuple[str, ...] = ()
  tfds_name: Optional[str] = None


_DIGIT_NAMES = tuple(str(i) for i in range(10))

DATASETS = {
    "fashion_mnist": DatasetInfo(
        (28, 28, 1), 10,
        ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Boot"),
        local_dirs=("/usr/share/datasets/fashion-mnist",), tfds_name="fashion_mnist"),
    "mnist": DatasetInfo((28, 28, 1), 10, _DIGIT_NAMES,
                         local_dirs=("/usr/share/datasets/mnist",), tfds_name="mnist"),
    "cifar10": DatasetInfo(
        (32, 32, 3), 10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        tfds_name="cifar10"),
    "digits": DatasetInfo((8, 8, 1), 10, _DIGIT_NAMES),
}

SPLITS = ("train", "validation", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}
# scikit-learn digits has no official split: a fixed, seeded 80/20 split.
_DIGITS_SPLIT_SEED = 0


def dataset_info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise DpdfdError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(DATASETS))}")
  return DATASETS[name]


def load(name: str, split: str, data_dir: Optional[str] = None):
  """Returns (images float32 [N, H, W, C] in [0, 1], labels int64 [N]) for one split."""
  info = dataset_info(name)
  if split not in SPLITS:
    raise DpdfdError(f"unknown split {split!r}; expected one of {SPLITS}")
  if data_dir:
    images, labels = _load_local(data_dir, split)
  elif split == "validation":
    raise DpdfdError(f"{name} has no validation split of its own: pass --data_dir with an .npz "
                     "holding x_validation/y_validation (records held out of the training "
                     "split; data.save_npz writes one)")
  elif name == "digits":
    images, labels = _load_digits(split)
  else:
    local = next((d for d in info.local_dirs if _has_idx_files(d)), None)
    images, labels = _load_idx_dir(local, split) if local else _load_tfds(info, split)
  _check_arrays(images, labels, info.num_classes, data_dir or name)
  images = _to_unit_float(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[1:] != info.image_shape:
    raise DpdfdError(f"{name} images have shape {images.shape[1:]}, expected {info.image_shape}")
  return images, labels.astype(np.int64)


def _check_arrays(images, labels, num_classes, source):
  """Shapes and labels the training and evaluation code can rely on, checked up front."""
  if images.ndim < 2 or labels.ndim != 1:
    raise DpdfdError(f"{source}: expected images of shape [N, H, W(, C)] and labels of shape "
                     f"[N], got {images.shape} and {labels.shape}")
  if len(images) != len(labels):
    raise DpdfdError(f"{source}: {len(images)} images but {len(labels)} labels")
  if not len(labels):
    raise DpdfdError(f"{source} holds no images")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise DpdfdError(f"{source}: labels must lie in [0, {num_classes}), found "
                     f"{labels.min()}..{labels.max()}")


def _to_unit_float(images):
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  # Written so that NaN fails too: every comparison with NaN is False.
  if not (images.min() >= 0.0 and images.max() <= 1.0):
    raise DpdfdError("float images must be finite and already lie in [0, 1] (the package's "
                     "pixel convention)")
  return images


def _load_local(path, split):
  if os.path.isdir(path):
    if not _has_idx_files(path):
      raise DpdfdError(f"{path} holds no IDX files (expected train-images-idx3-ubyte[.gz], "
                       "train-labels-idx1-ubyte[.gz], t10k-... )")
    return _load_idx_dir(path, split)
  if path.endswith(".npz") and os.path.isfile(path):
    return _load_npz(path, split)
  raise DpdfdError(f"data path {path} is neither a directory of IDX files nor an .npz file")


def _idx_path(directory, split, kind):
  stem = f"{_IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
  for candidate in (stem, stem + ".gz"):
    full = os.path.join(directory, candidate)
    if os.path.isfile(full):
      return full
  return None


def _has_idx_files(directory):
  return bool(directory) and os.path.isdir(directory) and all(
      _idx_path(directory, split, kind) for split in _IDX_PREFIX for kind in ("images", "labels"))


def read_idx(path):
  """Reads one IDX file (optionally gzipped) into a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DpdfdError(f"cannot read IDX file {path}: {e}") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise DpdfdError(f"{path} is not an IDX file of unsigned bytes")
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DpdfdError(f"{path} is truncated")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise DpdfdError(f"{path} is truncated or corrupt: header says shape {shape}")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_idx_dir(directory, split):
  if split == "validation":
    raise DpdfdError(f"{directory} holds IDX files, which have no validation split: pass an .npz "
                     "holding x_validation/y_validation (data.save_npz writes one)")
  return (read_idx(_idx_path(directory, split, "images")),
          read_idx(_idx_path(directory, split, "labels")))


def _load_npz(path, split):
  if not zipfile.is_zipfile(path):
    raise DpdfdError(f"{path} is not an .npz archive (truncated or another format)")
  try:
    with np.load(path, allow_pickle=False) as archive:
      keys = set(archive.files)
      if {f"x_{split}", f"y_{split}"} <= keys:
        images, labels = archive[f"x_{split}"], archive[f"y_{split}"]
      elif {"images", "labels"} <= keys:
        images, labels = archive["images"], archive["labels"]
      else:
        raise DpdfdError(f"{path} has keys {sorted(keys)}; expected x_{split}/y_{split} or "
                         "images/labels")
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DpdfdError(f"cannot read npz file {path}: {e}") from None
  if images.dtype.kind not in "uf" or labels.dtype.kind not in "iu":
    raise DpdfdError(f"{path}: images must be numeric and labels integer, got {images.dtype} and "
                     f"{labels.dtype}")
  return images, labels


def _load_digits(split):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
  cut = int(0.8 * len(images))
  chosen = order[:cut] if split == "train" else order[cut:]
  return images[chosen], digits.target[chosen]


def _load_tfds(info, split):
  if info.tfds_name is None:
    raise DpdfdError("no download source for this dataset; pass --data_dir")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    images, labels = tfds.as_numpy(tfds.load(info.tfds_name, split=split, as_supervised=True,
                                              batch_size=-1))
  except Exception as e:  # pylint: disable=broad-except
    raise DpdfdError(
        f"could not obtain {info.tfds_name} through tensorflow-datasets ({type(e).__name__}); "
        "without network access pass --data_dir with the IDX files or an .npz file") from None
  return images, labels


def save_npz(path: str, **splits):
  """Writes ``{split: (images, labels)}`` as an .npz that ``load(..., data_dir=path)`` reads.

  Images in the pixel convention ([0, 1] floats) are stored as bytes when that is exact (they
  were bytes to begin with), else as float32. The file appears only once complete.
  """
  unknown = sorted(set(splits) - set(SPLITS))
  if unknown:
    raise DpdfdError(f"unknown split(s) {unknown}; expected some of {SPLITS}")
  arrays = {}
  for split, (images, labels) in splits.items():
    images = np.asarray(images, np.float32)
    as_bytes = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    exact = np.array_equal(as_bytes.astype(np.float32) / 255.0, images)  # as load() maps bytes
    arrays[f"x_{split}"] = as_bytes if exact else images
    arrays[f"y_{split}"] = np.asarray(labels, np.int64)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = path[:-len(".npz")] + ".partial.npz" if path.endswith(".npz") else path + ".partial"
  np.savez_compressed(temporary, **arrays)
  os.replace(temporary, path)
