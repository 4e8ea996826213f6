"""Generator and classifier architectures.

Every model names its input ``images`` (classifiers) or ``latents`` (generator) and its output
``logits`` / ``images``, so exported serving signatures keep stable keys. Classifiers take images
in the package's [0, 1] pixel convention and return logits; the generator returns images in
[0, 1].
"""

import tensorflow as tf

from dpdfd_tf._compat import keras

layers = keras.layers

CLASSIFIERS = ("lenet5", "small_cnn", "resnet")


def build_generator(image_shape, latent_dim=100, width=16, name="generator"):
  """DCGAN-style generator: Dense -> (H/4, W/4, 4w) -> stride-2 Conv2DTranspose+BN+ReLU ->
  stride-2 Conv2DTranspose -> tanh.

  Conv2DTranspose rather than UpSampling2D: the latter's gradient has no XLA CPU kernel, and on
  CPU a transposed conv was ~5x faster than nearest upsampling + Conv3x3 (measured, B = 256).
  BatchNorm mixes the samples of a batch; the generator only ever sees the student and released
  noisy rows, so this costs no privacy.
  """
  height, width_px, channels = image_shape
  if height % 4 or width_px % 4:
    raise ValueError(f"generator needs image sides divisible by 4, got {image_shape}")
  latents = keras.Input((latent_dim,), name="latents")
  x = layers.Dense((height // 4) * (width_px // 4) * 4 * width, use_bias=False)(latents)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  x = layers.Reshape((height // 4, width_px // 4, 4 * width))(x)
  x = layers.Conv2DTranspose(2 * width, 4, strides=2, padding="same", use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="tanh")(x)
  images = layers.Rescaling(0.5, offset=0.5, name="images")(x)  # tanh range -> [0, 1]
  return keras.Model(latents, images, name=name)


def build_classifier(architecture, image_shape, num_classes, width=None, name=None):
  """One of CLASSIFIERS, for [0, 1] images of ``image_shape``, returning logits."""
  builders = {"lenet5": _lenet5, "small_cnn": _small_cnn, "resnet": _resnet}
  if architecture not in builders:
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {CLASSIFIERS}")
  images = keras.Input(image_shape, name="images")
  x = layers.Rescaling(2.0, offset=-1.0)(images)  # centred inputs train better
  x = builders[architecture](x, width)
  logits = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(images, logits, name=name or architecture)


def _lenet5(x, width):
  width = width or 6
  x = layers.Conv2D(width, 5, padding="same", activation="relu")(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Conv2D(int(width * 8 / 3), 5, padding="same", activation="relu")(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Flatten()(x)
  x = layers.Dense(20 * width, activation="relu")(x)
  return layers.Dense(14 * width, activation="relu")(x)


def _small_cnn(x, width):
  width = width or 32
  x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Flatten()(x)
  return layers.Dense(4 * width, activation="relu")(x)


def _resnet(x, width):
  """A ResNet-8-style network (three stages of one residual block) for 32x32x3 inputs."""
  width = width or 16
  x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  for stage, filters in enumerate((width, 2 * width, 4 * width)):
    strides = 1 if stage == 0 else 2
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    if strides != 1 or shortcut.shape[-1] != filters:
      shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(shortcut)
      shortcut = layers.BatchNormalization()(shortcut)
    x = layers.ReLU()(layers.Add()([y, shortcut]))
  return layers.GlobalAveragePooling2D()(x)


ENSEMBLE_ARCHITECTURES = ("ensemble_mlp",)


@keras.utils.register_keras_serializable(package="dpdfd_tf")
class StackedDense(layers.Layer):
  """M independent dense layers in one call: kernel [M, in, out].

  Input [B, in] is shared by all M (inference on the same images) and gives [B, M, out]; input
  [B, M, in] feeds each its own rows (training on disjoint shards). One einsum evaluates all M,
  so hundreds of teachers cost one matrix product, not hundreds of calls.
  """

  def __init__(self, num_members, units, activation=None, **kwargs):
    super().__init__(**kwargs)
    self.num_members = int(num_members)
    self.units = int(units)
    self.activation = keras.activations.get(activation)

  def build(self, input_shape):
    fan_in = int(input_shape[-1])
    self.kernel = self.add_weight(
        name="kernel", shape=(self.num_members, fan_in, self.units),
        initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "uniform"))
    self.bias = self.add_weight(name="bias", shape=(self.num_members, self.units),
                                initializer="zeros")
    super().build(input_shape)

  def call(self, inputs):
    equation = "bi,mio->bmo" if inputs.shape.rank == 2 else "bmi,mio->bmo"
    return self.activation(tf.einsum(equation, inputs, self.kernel) + self.bias)

  def get_config(self):
    return {**super().get_config(), "num_members": self.num_members, "units": self.units,
            "activation": keras.activations.serialize(self.activation)}


def build_teacher_ensemble(architecture, image_shape, num_classes, num_teachers, width=None,
                           name="teacher_ensemble"):
  """M classifiers evaluated in one call: [0, 1] images -> [B, M, K] logits.

  ``ensemble_mlp``: a fixed, data-independent front end (average-pool to at most 14x14, so the
  per-teacher weights stay small), then per teacher a hidden layer of ``width`` units (default
  64) and a linear layer of K logits. The front end has no weights; each teacher's weights are
  trained only on its own shard.
  """
  if architecture not in ENSEMBLE_ARCHITECTURES:
    raise ValueError(f"unknown ensemble architecture {architecture!r}; expected one of "
                     f"{ENSEMBLE_ARCHITECTURES}")
  images = keras.Input(image_shape, name="images")
  features = ensemble_features(images)
  hidden = StackedDense(num_teachers, width or 64, "relu", name="hidden")(features)
  logits = StackedDense(num_teachers, num_classes, name="logits")(hidden)
  return keras.Model(images, logits, name=name)


def ensemble_features(images):
  """The ensemble's weight-free front end: centre, average-pool to <= 14 pixels a side, flatten."""
  pool = max(1, int(images.shape[1]) // 14)
  x = layers.Rescaling(2.0, offset=-1.0, name="centre")(images)
  if pool > 1:
    x = layers.AveragePooling2D(pool, name="pool")(x)
  return layers.Flatten(name="features")(x)
