"""Shared fixtures: tiny models and a small teacher trained on scikit-learn digits."""

import os
import subprocess
import sys

import numpy as np
import pytest

import dpdfd_tf  # noqa: F401  (import-order workarounds first)
from dpdfd_tf import architectures
from dpdfd_tf import classification
from dpdfd_tf import data
from dpdfd_tf._compat import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(module, *args, timeout=600):
  """Runs ``python -m dpdfd_tf.<module> args`` and returns the CompletedProcess."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, "-m", f"dpdfd_tf.{module}", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=env)


def tree_snapshot(path):
  """{relative path: (size, mtime_ns)} of every file under ``path``."""
  snapshot = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      status = os.stat(full)
      snapshot[os.path.relpath(full, path)] = (status.st_size, status.st_mtime_ns)
  return snapshot


@pytest.fixture(scope="session")
def digits_teacher_path(tmp_path_factory):
  """A small CNN teacher trained on digits (about 90% test accuracy), as a Keras SavedModel."""
  keras.utils.set_random_seed(0)
  images, labels = data.load("digits", "train")
  model = architectures.build_classifier("small_cnn", (8, 8, 1), 10, width=16, name="teacher")
  classification.train_classifier(model, images, labels, epochs=15, batch_size=64, verbose=0)
  path = str(tmp_path_factory.mktemp("teacher") / "model")
  model.save(path, include_optimizer=False)
  return path


@pytest.fixture
def rng():
  return np.random.default_rng(0)
