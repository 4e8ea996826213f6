"""Data sources: IDX directories, npz files, digits, and their errors."""

import gzip
import os

import numpy as np
import pytest

from dpdfd_tf import data
from dpdfd_tf.errors import DpdfdError


def write_idx(path, array, compress=False):
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  opener = gzip.open if compress else open
  with opener(path, "wb") as f:
    f.write(payload)


def make_idx_dir(directory, compress, rng, shape=(28, 28)):
  os.makedirs(directory, exist_ok=True)
  suffix = ".gz" if compress else ""
  arrays = {}
  for prefix, count in (("train", 6), ("t10k", 4)):
    images = rng.integers(0, 256, (count,) + shape, dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
    arrays[prefix] = (images, labels)
  return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_round_trip(tmp_path, rng, compress):
  arrays = make_idx_dir(str(tmp_path), compress, rng)
  images, labels = data.load("fashion_mnist", "test", str(tmp_path))
  assert images.shape == (4, 28, 28, 1) and images.dtype == np.float32
  np.testing.assert_allclose(images[..., 0], arrays["t10k"][0] / 255.0)
  np.testing.assert_array_equal(labels, arrays["t10k"][1])
  assert 0.0 <= images.min() and images.max() <= 1.0


def test_npz_sources(tmp_path, rng):
  keras_style = tmp_path / "keras.npz"
  x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  np.savez(keras_style, x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
  images, labels = data.load("mnist", "test", str(keras_style))
  assert images.shape == (2, 28, 28, 1) and list(labels) == [0, 1]
  generated = tmp_path / "synthetic.npz"
  np.savez(generated, images=rng.random((3, 28, 28, 1), dtype=np.float32),
           labels=np.array([1, 2, 3]))
  images, labels = data.load("fashion_mnist", "train", str(generated))
  assert images.shape == (3, 28, 28, 1) and list(labels) == [1, 2, 3]


def test_save_npz_round_trips_every_split_and_keeps_bytes_exact(tmp_path, rng):
  path = str(tmp_path / "splits.npz")
  as_unit = lambda count: rng.integers(0, 256, (count, 28, 28, 1)).astype(np.float32) / 255.0
  splits = {"train": (as_unit(5), np.arange(5)), "validation": (as_unit(3), np.arange(3)),
            "test": (rng.random((2, 28, 28, 1), dtype=np.float32), np.arange(2))}
  data.save_npz(path, **splits)
  with np.load(path) as archive:
    # Pixels that were bytes are stored as bytes; the others stay float32, unrounded.
    assert archive["x_validation"].dtype == np.uint8 and archive["x_test"].dtype == np.float32
  for split, (images, labels) in splits.items():
    loaded_images, loaded_labels = data.load("fashion_mnist", split, path)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
  assert sorted(os.listdir(tmp_path)) == ["splits.npz"]  # no partial file left behind
  with pytest.raises(DpdfdError, match="unknown split"):
    data.save_npz(path, dev=splits["test"])


def test_validation_split_only_from_an_npz_that_has_one(tmp_path, rng):
  make_idx_dir(str(tmp_path / "idx"), False, rng)
  for name, data_dir in (("digits", None), ("fashion_mnist", str(tmp_path / "idx"))):
    with pytest.raises(DpdfdError, match="validation"):
      data.load(name, "validation", data_dir)
  path = tmp_path / "no_validation.npz"
  np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.arange(2))
  with pytest.raises(DpdfdError, match="x_validation"):
    data.load("fashion_mnist", "validation", str(path))


def test_digits_needs_no_download_and_splits_disjointly():
  train_images, train_labels = data.load("digits", "train")
  test_images, _ = data.load("digits", "test")
  assert train_images.shape[1:] == (8, 8, 1) and len(train_images) + len(test_images) == 1797
  assert set(np.unique(train_labels)) == set(range(10))
  assert 0.0 <= train_images.min() and train_images.max() <= 1.0


@pytest.mark.parametrize("problem,message", [
    ("missing_files", "holds no IDX files"),
    ("corrupt", "truncated or corrupt"),
    ("not_idx", "not an IDX file"),
])
def test_bad_idx_directories_are_clear_errors(tmp_path, rng, problem, message):
  make_idx_dir(str(tmp_path), False, rng)
  target = tmp_path / "t10k-images-idx3-ubyte"
  if problem == "missing_files":
    os.remove(target)
  elif problem == "corrupt":
    target.write_bytes(target.read_bytes()[:-10])
  else:
    target.write_bytes(b"hello world, not idx")
  with pytest.raises(DpdfdError, match=message):
    data.load("fashion_mnist", "test", str(tmp_path))


def test_unknown_dataset_and_bad_npz(tmp_path):
  with pytest.raises(DpdfdError, match="unknown dataset"):
    data.load("imagenet", "train")
  bad = tmp_path / "bad.npz"
  np.savez(bad, images=np.array(["a", "b"]), labels=np.array([0, 1]))
  with pytest.raises(DpdfdError):
    data.load("mnist", "train", str(bad))
  wrong_keys = tmp_path / "keys.npz"
  np.savez(wrong_keys, pixels=np.zeros((2, 28, 28)))
  with pytest.raises(DpdfdError, match="expected"):
    data.load("mnist", "train", str(wrong_keys))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_found_without_network():
  images, labels = data.load("fashion_mnist", "test")
  assert images.shape == (10000, 28, 28, 1) and np.bincount(labels).tolist() == [1000] * 10
