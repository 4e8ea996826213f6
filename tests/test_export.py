"""SavedModel export: named signatures, reload with tf.saved_model.load and saved_model_cli."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dpdfd_tf import architectures
from dpdfd_tf import export


@pytest.fixture(scope="module")
def networks():
  tf.keras.utils.set_random_seed(0)
  student = architectures.build_classifier("small_cnn", (8, 8, 1), 10, width=4, name="student")
  generator = architectures.build_generator((8, 8, 1), latent_dim=5, width=4)
  return student, generator


def saved_model_cli(*args):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([cli, *args], capture_output=True, text=True, timeout=300, env=env)


def test_student_signature_round_trip(tmp_path, networks):
  student, _ = networks
  path = export.export_student(student, str(tmp_path / "student"))
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures["serving_default"]
  assert set(serve.structured_input_signature[1]) == {"images"}
  assert set(serve.structured_outputs) == {"probabilities", "classes"}
  images = tf.random.uniform([6, 8, 8, 1], seed=0)
  out = serve(images=images)
  expected = tf.nn.softmax(student(images)).numpy()
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["classes"].numpy(), expected.argmax(-1))
  np.testing.assert_allclose(loaded.signatures["logits"](images=images)["logits"].numpy(),
                             student(images).numpy(), rtol=1e-5, atol=1e-6)


def test_generator_signatures_round_trip(tmp_path, networks):
  student, generator = networks
  path = export.export_generator(generator, student, str(tmp_path / "generator"))
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](num_samples=tf.constant(7),
                                             seed=tf.constant(3, tf.int64))
  assert out["images"].shape == (7, 8, 8, 1) and out["labels"].shape == (7,)
  assert 0.0 <= float(tf.reduce_min(out["images"])) and float(tf.reduce_max(out["images"])) <= 1.0
  again = loaded.signatures["from_latents"](latents=out["latents"])
  np.testing.assert_allclose(again["images"].numpy(), out["images"].numpy(), atol=1e-6)
  np.testing.assert_array_equal(
      out["labels"].numpy(), np.argmax(student(generator(out["latents"], training=False)), -1))


def test_exports_run_under_saved_model_cli(tmp_path, networks):
  student, generator = networks
  student_path = export.export_student(student, str(tmp_path / "student"))
  generator_path = export.export_generator(generator, student, str(tmp_path / "generator"))
  shown = saved_model_cli("show", "--dir", student_path, "--all")
  assert shown.returncode == 0, shown.stderr
  assert "serving_default" in shown.stdout and "images" in shown.stdout
  batch = str(tmp_path / "batch.npy")
  np.save(batch, np.full((2, 8, 8, 1), 0.5, np.float32))
  ran = saved_model_cli("run", "--dir", student_path, "--tag_set", "serve", "--signature_def",
                        "serving_default", "--inputs", f"images={batch}")
  assert ran.returncode == 0, ran.stderr
  assert "probabilities" in ran.stdout and "classes" in ran.stdout
  ran = saved_model_cli("run", "--dir", generator_path, "--tag_set", "serve", "--signature_def",
                        "serving_default", "--input_exprs", "num_samples=3;seed=1")
  assert ran.returncode == 0, ran.stderr
  assert "images" in ran.stdout and "labels" in ran.stdout


def test_export_replaces_previous_export_atomically(tmp_path, networks):
  student, _ = networks
  path = str(tmp_path / "student")
  export.export_student(student, path)
  export.export_student(student, path)
  assert sorted(os.listdir(tmp_path)) == ["student"]  # no partial or previous copies left
