"""Import-order workarounds for the pinned stack (see BUILD.md).

Must run before anything touches ``tf.keras``:
1. ``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` resolve to tf_keras (Keras 2), which
   tensorflow-privacy's DP optimizers are built on. Set after the first ``tf.keras`` access it is
   silently ignored, so we assert it took effect.
2. ``import tensorflow_privacy`` (the package root) fails on TF 2.21; setting
   ``sys.skip_tf_privacy_import`` lets us import only the submodules we use.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.skip_tf_privacy_import = True

import tensorflow as tf  # noqa: E402

keras = tf.keras

if not keras.Model.__module__.startswith("tf_keras"):
    raise ImportError(
        "dpdfd_tf needs tf.keras to be tf_keras (Keras 2). Import dpdfd_tf before anything "
        "touches tf.keras, or set TF_USE_LEGACY_KERAS=1 in the environment.")
