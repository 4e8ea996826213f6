"""DPDFD under tf.distribute on two logical CPU devices: same noise, same update as one device.

Logical devices must be configured before TensorFlow starts, so the check runs in a fresh
process (``distributed_check``) and reports back as JSON.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import json, sys
import dpdfd_tf
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from dpdfd_tf import distiller
from dpdfd_tf._compat import keras
from test_distiller import linear_models

SIGMA, CLIP, BATCH = float(sys.argv[1]), 0.5, 512

def build(same_teacher):
  teacher, student, generator = linear_models(0)
  if same_teacher:  # rows are then 0 (up to rounding): the release is the noise
    teacher.set_weights(student.get_weights())
  model = distiller.DPDFD(teacher, student, generator, batch_size=BATCH, clip_norm=CLIP,
                          noise_multiplier=SIGMA, seed=11, noise_seed=22, input_mixup=False,
                          generator_steps_per_iteration=1, max_private_steps=2)
  model.compile(student_optimizer=keras.optimizers.SGD(0.1),
                generator_optimizer=keras.optimizers.SGD(0.1))
  return model

def released(model, strategy):
  rows = strategy.run(tf.function(lambda: model.private_student_step()[1]))
  return np.concatenate([t.numpy() for t in strategy.experimental_local_results(rows)])

out = {}
for name, strategy in (("one", tf.distribute.get_strategy()),
                       ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
  with strategy.scope():
    noise_model = build(True)
    model = build(False)
  out[name] = {
      "replicas": strategy.num_replicas_in_sync,
      "noise": released(noise_model, strategy).tolist(),
      "private_steps_after_noise": int(noise_model.private_steps.numpy()),
  }
  model.fit(verbose=0)
  out[name]["student"] = [w.tolist() for w in model.student.get_weights()]
  out[name]["generator"] = [w.tolist() for w in model.generator.get_weights()]
  out[name]["private_steps"] = int(model.private_steps.numpy())
  out[name]["epsilon"] = model.epsilon(1e-5)
print(json.dumps(out))
"""


def distributed_check(sigma):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.path.dirname(TESTS)]),
             TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(sigma)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=TESTS)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
  return distributed_check(sigma=1.5)


def test_two_replicas_add_exactly_sigma_c_noise_once_per_row(runs):
  one, two = runs["one"], runs["two"]
  assert one["replicas"] == 1 and two["replicas"] == 2
  noise = np.array(two["noise"])
  assert noise.shape == (512, 3)  # every row of the global batch, each released once
  # Empirical std of 1,536 N(0, (sigma C)^2) draws: 0.75 within a few percent.
  assert np.std(noise) == pytest.approx(1.5 * 0.5, rel=0.06)
  # ... and the very same draws as on one device: no replica adds or drops noise. (Rows of
  # identical networks are 0 up to rounding, which normalization can lift to ~1e-2 C.)
  difference = np.abs(noise - np.array(one["noise"]))
  assert np.mean(difference < 1e-6) > 0.99 and difference.max() < 1e-2
  assert two["private_steps_after_noise"] == 1


def test_two_replicas_make_the_single_device_update(runs):
  one, two = runs["one"], runs["two"]
  for a, b in zip(one["student"], two["student"]):
    np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)
  # The generator's batch-level terms (class balance, diversity) are computed per replica on
  # its half of the batch, so its update is close to, not equal to, the one-device update.
  for a, b in zip(one["generator"], two["generator"]):
    np.testing.assert_allclose(np.array(b), np.array(a), rtol=0, atol=1e-3)
  assert one["private_steps"] == two["private_steps"] == 2
  assert one["epsilon"] == two["epsilon"]
