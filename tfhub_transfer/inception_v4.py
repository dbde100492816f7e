"""Inception v4 in Keras 3, layer for layer the TF-slim network, and its checkpoint loader.

The paper's best fine-tuned network has no TF2 release; its TF-slim ImageNet checkpoint
(`inception_v4_2016_09_09`) is public. `build_inception_v4` reproduces
tensorflow/models research/slim/nets/inception_v4.py: `inception_v4_base` (stem, 4 x
Inception-A, Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C) and the global average
pool of its `Logits` scope, giving 1536 features (no top). Every convolution follows the arg
scope of nets/inception_utils.py: no bias, then batch norm with beta but no gamma (slim's
`batch_norm` default scale=False; decay 0.9997, epsilon 0.001), then ReLU, initialised like
slim's `variance_scaling_initializer()` (factor 2, fan in, truncated normal); convolutions and
pools are stride 1 with SAME padding unless marked. Inputs are in [-1, 1], 299 px natively.

Each Keras layer is named after its slim scope below `InceptionV4/`, with `.` for `/` (Keras
names cannot hold `/`): the conv `Mixed_5b.Branch_0.Conv2d_0a_1x1` holds
`InceptionV4/Mixed_5b/Branch_0/Conv2d_0a_1x1/weights`, the batch norm
`Mixed_5b.Branch_0.Conv2d_0a_1x1.BatchNorm` holds `.../BatchNorm/{beta,moving_mean,
moving_variance}`. `slim_variables` is that map; `load_slim_checkpoint` assigns by it.
"""

import os
from typing import Iterable

import keras
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import regimes

SLIM_SCOPE = "InceptionV4"
# Smallest input the VALID-padded stride-2 layers (stem, Mixed_5a, Mixed_6a, Mixed_7a) leave
# at least one pixel for: 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1.
MIN_IMAGE_SIZE = 75
BATCH_NORM_DECAY = 0.9997
BATCH_NORM_EPSILON = 0.001

# The TF-slim README's ImageNet checkpoint (top-1 80.2%); the archive holds one file,
# inception_v4.ckpt (a TF1 checkpoint, read by name with tf.train.load_checkpoint).
CHECKPOINT_ARCHIVE = "inception_v4_2016_09_09.tar.gz"
CHECKPOINT_URL = "http://download.tensorflow.org/models/" + CHECKPOINT_ARCHIVE
CHECKPOINT_FILE = "inception_v4.ckpt"

# Checkpoint variables the no-top backbone has no use for: the 1001-way classifier, the
# auxiliary head, the step counter, and training state kept beside a weight (optimizer slots,
# moving averages of the weights).
_UNUSED_SCOPES = (f"{SLIM_SCOPE}/Logits/", f"{SLIM_SCOPE}/AuxLogits/")
_UNUSED_NAMES = ("global_step",)
_TRAINING_STATE_SUFFIXES = ("/ExponentialMovingAverage", "/RMSProp", "/RMSProp_1", "/Momentum")


class _Net:
  """Builds layers named by slim scope; `scope` is the current variable_scope path."""

  def __init__(self, seed: int, random_init: bool):
    # One generator for all kernels: each draws fresh values, the whole init is set by `seed`.
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.random_init = random_init
    self.scope: list[str] = []

  def name(self, name: str) -> str:
    return ".".join(self.scope + [name])

  def conv(self, x, filters: int, kernel, name: str, *, strides: int = 1,
           padding: str = "same"):
    """slim.conv2d under the inception arg scope: conv (no bias) -> batch norm -> ReLU."""
    name = self.name(name)
    initializer = (keras.initializers.VarianceScaling(
        2.0, mode="fan_in", distribution="truncated_normal", seed=self.seed_generator)
                   if self.random_init else "zeros")
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                            name=name, kernel_initializer=initializer)(x)
    x = keras.layers.BatchNormalization(momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
                                        scale=False, name=name + ".BatchNorm")(x)
    return keras.layers.ReLU(name=name + ".Relu")(x)

  def max_pool(self, x, name: str, *, strides: int = 2, padding: str = "valid"):
    return keras.layers.MaxPooling2D(3, strides=strides, padding=padding,
                                     name=self.name(name))(x)

  def avg_pool(self, x, name: str):
    # SAME average pooling averages over the valid pixels only, as slim's (TF's) does.
    return keras.layers.AveragePooling2D(3, strides=1, padding="same",
                                         name=self.name(name))(x)

  def concat(self, branches):
    # Named like slim's tf.concat op in the current scope.
    return keras.layers.Concatenate(axis=-1, name=self.name("concat"))(branches)

  def block(self, name: str, branch_fns: Iterable):
    """A variable scope `name` whose branches `Branch_i` are concatenated."""
    def run(x):
      self.scope.append(name)
      outputs = []
      for i, branch_fn in enumerate(branch_fns):
        self.scope.append(f"Branch_{i}")
        outputs.append(branch_fn(x))
        self.scope.pop()
      out = self.concat(outputs)
      self.scope.pop()
      return out
    return run


def _inception_a(net: _Net, name: str):
  c = net.conv
  return net.block(name, [
      lambda x: c(x, 96, 1, "Conv2d_0a_1x1"),
      lambda x: c(c(x, 64, 1, "Conv2d_0a_1x1"), 96, 3, "Conv2d_0b_3x3"),
      lambda x: c(c(c(x, 64, 1, "Conv2d_0a_1x1"), 96, 3, "Conv2d_0b_3x3"), 96, 3,
                  "Conv2d_0c_3x3"),
      lambda x: c(net.avg_pool(x, "AvgPool_0a_3x3"), 96, 1, "Conv2d_0b_1x1"),
  ])


def _reduction_a(net: _Net, name: str):
  c = net.conv
  return net.block(name, [
      lambda x: c(x, 384, 3, "Conv2d_1a_3x3", strides=2, padding="valid"),
      lambda x: c(c(c(x, 192, 1, "Conv2d_0a_1x1"), 224, 3, "Conv2d_0b_3x3"), 256, 3,
                  "Conv2d_1a_3x3", strides=2, padding="valid"),
      lambda x: net.max_pool(x, "MaxPool_1a_3x3"),
  ])


def _inception_b(net: _Net, name: str):
  c = net.conv

  def branch_2(x):
    x = c(x, 192, 1, "Conv2d_0a_1x1")
    x = c(x, 192, (7, 1), "Conv2d_0b_7x1")
    x = c(x, 224, (1, 7), "Conv2d_0c_1x7")
    x = c(x, 224, (7, 1), "Conv2d_0d_7x1")
    return c(x, 256, (1, 7), "Conv2d_0e_1x7")

  return net.block(name, [
      lambda x: c(x, 384, 1, "Conv2d_0a_1x1"),
      lambda x: c(c(c(x, 192, 1, "Conv2d_0a_1x1"), 224, (1, 7), "Conv2d_0b_1x7"), 256, (7, 1),
                  "Conv2d_0c_7x1"),
      branch_2,
      lambda x: c(net.avg_pool(x, "AvgPool_0a_3x3"), 128, 1, "Conv2d_0b_1x1"),
  ])


def _reduction_b(net: _Net, name: str):
  c = net.conv

  def branch_1(x):
    x = c(x, 256, 1, "Conv2d_0a_1x1")
    x = c(x, 256, (1, 7), "Conv2d_0b_1x7")
    x = c(x, 320, (7, 1), "Conv2d_0c_7x1")
    return c(x, 320, 3, "Conv2d_1a_3x3", strides=2, padding="valid")

  return net.block(name, [
      lambda x: c(c(x, 192, 1, "Conv2d_0a_1x1"), 192, 3, "Conv2d_1a_3x3", strides=2,
                  padding="valid"),
      branch_1,
      lambda x: net.max_pool(x, "MaxPool_1a_3x3"),
  ])


def _inception_c(net: _Net, name: str):
  c = net.conv

  def split(x, first: str, second: str):
    # Slim concatenates a 1x3 and a 3x1 conv of the same input inside the branch.
    return net.concat([c(x, 256, (1, 3), first), c(x, 256, (3, 1), second)])

  def branch_2(x):
    x = c(x, 384, 1, "Conv2d_0a_1x1")
    x = c(x, 448, (3, 1), "Conv2d_0b_3x1")
    x = c(x, 512, (1, 3), "Conv2d_0c_1x3")
    return split(x, "Conv2d_0d_1x3", "Conv2d_0e_3x1")

  return net.block(name, [
      lambda x: c(x, 256, 1, "Conv2d_0a_1x1"),
      lambda x: split(c(x, 384, 1, "Conv2d_0a_1x1"), "Conv2d_0b_1x3", "Conv2d_0c_3x1"),
      branch_2,
      lambda x: c(net.avg_pool(x, "AvgPool_0a_3x3"), 256, 1, "Conv2d_0b_1x1"),
  ])


def build_inception_v4(*, image_size: int = 299, seed: int = 0, random_init: bool = True,
                       name: str = "inception_v4") -> keras.Model:
  """The no-top TF-slim Inception v4: images in [-1, 1] [B, S, S, 3] -> features [B, 1536].

  Args:
    image_size: input resolution S (299 natively, at least `MIN_IMAGE_SIZE`).
    seed: seed of the kernels' random init (batch norm starts at beta 0, mean 0, variance 1).
    random_init: False: kernels start at zero, for a model a checkpoint then assigns whole
      (`load_slim_checkpoint` assigns every variable or none); drawing 41M values only to
      overwrite them took about 2 of a build's 3 CPU-seconds.
    name: model name.

  Returns:
    A functional Keras model whose layers are named by slim scope (see the module docstring).

  Raises:
    ValueError: `image_size` is below `MIN_IMAGE_SIZE`.
  """
  if image_size < MIN_IMAGE_SIZE:
    raise ValueError(f"Inception v4 needs images of at least {MIN_IMAGE_SIZE} px (its VALID "
                     f"stride-2 layers leave nothing of smaller ones); got --image_size="
                     f"{image_size}. Use {MIN_IMAGE_SIZE} or more (299 is native).")
  net = _Net(seed, random_init)
  c = net.conv
  images = keras.Input((image_size, image_size, 3), name="images")
  x = c(images, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
  x = c(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
  x = c(x, 64, 3, "Conv2d_2b_3x3")
  x = net.block("Mixed_3a", [
      lambda x: net.max_pool(x, "MaxPool_0a_3x3"),
      lambda x: c(x, 96, 3, "Conv2d_0a_3x3", strides=2, padding="valid"),
  ])(x)
  x = net.block("Mixed_4a", [
      lambda x: c(c(x, 64, 1, "Conv2d_0a_1x1"), 96, 3, "Conv2d_1a_3x3", padding="valid"),
      lambda x: c(c(c(c(x, 64, 1, "Conv2d_0a_1x1"), 64, (1, 7), "Conv2d_0b_1x7"), 64, (7, 1),
                    "Conv2d_0c_7x1"), 96, 3, "Conv2d_1a_3x3", padding="valid"),
  ])(x)
  x = net.block("Mixed_5a", [
      lambda x: c(x, 192, 3, "Conv2d_1a_3x3", strides=2, padding="valid"),
      lambda x: net.max_pool(x, "MaxPool_1a_3x3"),
  ])(x)
  for letter in "bcde":
    x = _inception_a(net, "Mixed_5" + letter)(x)
  x = _reduction_a(net, "Mixed_6a")(x)
  for letter in "bcdefgh":
    x = _inception_b(net, "Mixed_6" + letter)(x)
  x = _reduction_b(net, "Mixed_7a")(x)
  for letter in "bcd":
    x = _inception_c(net, "Mixed_7" + letter)(x)
  # Slim's Logits scope pools with a kernel the size of the 8 x 8 (at 299 px) map: a global
  # average pool.
  features = keras.layers.GlobalAveragePooling2D(name="Logits.AvgPool_1a")(x)
  return keras.Model(images, features, name=name)


def slim_variables(model: keras.Model) -> dict[str, keras.Variable]:
  """Slim checkpoint name -> the model's variable, for every variable of `model`.

  Raises:
    ValueError: a variable has no slim name (the model is not `build_inception_v4`'s).
  """
  names = {}
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      pairs = [("weights", layer.kernel)]
    elif isinstance(layer, keras.layers.BatchNormalization):
      pairs = [("beta", layer.beta), ("moving_mean", layer.moving_mean),
               ("moving_variance", layer.moving_variance)]
    else:
      continue
    scope = "/".join([SLIM_SCOPE] + layer.name.split("."))
    names.update({f"{scope}/{suffix}": variable for suffix, variable in pairs})
  unnamed = {v.path for v in model.variables} - {v.path for v in names.values()}
  if unnamed:
    raise ValueError(f"Variables without a slim name: {sorted(unnamed)}; expected a model "
                     f"from build_inception_v4.")
  return names


def _unused(name: str) -> bool:
  return (name in _UNUSED_NAMES or name.startswith(_UNUSED_SCOPES)
          or name.endswith(_TRAINING_STATE_SUFFIXES))


def load_slim_checkpoint(model: keras.Model, path: str) -> None:
  """Assigns every variable of `model` from a TF-slim checkpoint, by name.

  Args:
    model: from `build_inception_v4`.
    path: the checkpoint: a TF1 checkpoint file (the archive's `inception_v4.ckpt`) or the
      prefix of a TF2-format one (`PATH.index` and `PATH.data-*` exist).

  Raises:
    ValueError: the file is not a readable checkpoint, or its variables do not match: the
      message lists every checkpoint variable with no layer, every model variable the
      checkpoint lacks, and every shape mismatch. The classifier, auxiliary head,
      global_step and optimizer/moving-average state are ignored.
  """
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"--weights={path!r} is not a readable TF checkpoint ({e}). Pass the "
                     f"{CHECKPOINT_FILE} extracted from {CHECKPOINT_URL}, or the prefix of a "
                     f"TF2 checkpoint (without .index).") from e
  shapes = reader.get_variable_to_shape_map()
  targets = slim_variables(model)
  unexpected = sorted(n for n in shapes if n not in targets and not _unused(n))
  missing = sorted(n for n in targets if n not in shapes)
  mismatched = [f"{n} (checkpoint {list(shapes[n])}, model {list(v.shape)})"
                for n, v in sorted(targets.items())
                if n in shapes and list(shapes[n]) != list(v.shape)]
  if unexpected or missing or mismatched:
    problems = [f"{label} ({len(items)}): {', '.join(items)}" for label, items in (
        ("checkpoint variables with no layer", unexpected),
        ("model variables missing from the checkpoint", missing),
        ("shape mismatches", mismatched)) if items]
    raise ValueError(
        f"--weights={path!r} does not match the TF-slim Inception v4 (variables named "
        f"{SLIM_SCOPE}/...): " + "; ".join(problems) + f". Expected the ImageNet checkpoint "
        f"{CHECKPOINT_FILE} from {CHECKPOINT_URL}, or one saved from slim's inception_v4.")
  for name, variable in targets.items():
    variable.assign(reader.get_tensor(name))


def default_checkpoint_path() -> str:
  """Where `--weights=imagenet` looks for the checkpoint: beside Keras' cached weights."""
  return os.path.join(backbones.keras_models_dir(), CHECKPOINT_FILE)


def build_backbone(spec, *, weights: str, seed: int) -> keras.Model:
  """The `BackboneSpec.builder` of `inception_v4`: the spec's network with `weights`.

  Args:
    spec: a `backbones.BackboneSpec` (its image size is used).
    weights: `random`, `imagenet` (the checkpoint at `default_checkpoint_path()`) or the path
      of a slim checkpoint.
    seed: seed of the random init.

  Returns:
    The no-top network.

  Raises:
    FileNotFoundError: `imagenet`, and the checkpoint is not in the Keras cache.
    ValueError: the checkpoint does not match (see `load_slim_checkpoint`).
  """
  if weights == regimes.IMAGENET:
    path = default_checkpoint_path()
    if not os.path.isfile(path) and not os.path.isfile(path + ".index"):
      raise FileNotFoundError(
          f"ImageNet weights for --model={spec.name} are the TF-slim checkpoint "
          f"{CHECKPOINT_ARCHIVE} ({CHECKPOINT_URL}); nothing is at {path}. Download the "
          f"archive on a machine with network, extract {CHECKPOINT_FILE} and copy it there "
          f"(or set KERAS_HOME), or pass --weights=PATH/{CHECKPOINT_FILE}.")
    weights = path
  model = build_inception_v4(image_size=spec.image_size, seed=seed,
                             random_init=weights == regimes.RANDOM)
  if weights != regimes.RANDOM:
    load_slim_checkpoint(model, weights)
  return model
