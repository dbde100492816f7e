"""Inception v4: the TF-slim architecture and its checkpoint loader.

The references are written out here from outside the code: the published parameter count, the
variable names and widths of tensorflow/models research/slim/nets/inception_v4.py, the map
sizes in that file's comments, and batch norm's formula. The checkpoints are written here,
under names this file spells, in both formats (TF1 like the released archive, and TF2).
"""

import os
import shutil
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import identity
from tfhub_transfer import inception_v4

# The published size: osmr/imgclsmob pytorch/README.md (the pytorchcv zoo) lists InceptionV4,
# "From Cadene/pretrained-models.pytorch" (a PyTorch port of this slim checkpoint), at
# 42,679,816 parameters. That port (pretrainedmodels/models/inceptionv4.py) has the same
# bias-free convs, then nn.BatchNorm2d(affine=True), which adds a gamma beside slim's beta, and
# nn.Linear(1536, 1000). Its count leaves out batch norm's running statistics (buffers).
PUBLISHED_PARAMS = 42_679_816
PUBLISHED_CLASSIFIER = 1536 * 1000 + 1000

# Each conv's scope and width in slim's inception_v4.py, block by block.
_STEM = [
    ("Conv2d_1a_3x3", 32), ("Conv2d_2a_3x3", 32), ("Conv2d_2b_3x3", 64),
    ("Mixed_3a/Branch_1/Conv2d_0a_3x3", 96),
    ("Mixed_4a/Branch_0/Conv2d_0a_1x1", 64), ("Mixed_4a/Branch_0/Conv2d_1a_3x3", 96),
    ("Mixed_4a/Branch_1/Conv2d_0a_1x1", 64), ("Mixed_4a/Branch_1/Conv2d_0b_1x7", 64),
    ("Mixed_4a/Branch_1/Conv2d_0c_7x1", 64), ("Mixed_4a/Branch_1/Conv2d_1a_3x3", 96),
    ("Mixed_5a/Branch_0/Conv2d_1a_3x3", 192)]
_INCEPTION_A = [
    ("Branch_0/Conv2d_0a_1x1", 96), ("Branch_1/Conv2d_0a_1x1", 64),
    ("Branch_1/Conv2d_0b_3x3", 96), ("Branch_2/Conv2d_0a_1x1", 64),
    ("Branch_2/Conv2d_0b_3x3", 96), ("Branch_2/Conv2d_0c_3x3", 96),
    ("Branch_3/Conv2d_0b_1x1", 96)]
_REDUCTION_A = [
    ("Branch_0/Conv2d_1a_3x3", 384), ("Branch_1/Conv2d_0a_1x1", 192),
    ("Branch_1/Conv2d_0b_3x3", 224), ("Branch_1/Conv2d_1a_3x3", 256)]
_INCEPTION_B = [
    ("Branch_0/Conv2d_0a_1x1", 384), ("Branch_1/Conv2d_0a_1x1", 192),
    ("Branch_1/Conv2d_0b_1x7", 224), ("Branch_1/Conv2d_0c_7x1", 256),
    ("Branch_2/Conv2d_0a_1x1", 192), ("Branch_2/Conv2d_0b_7x1", 192),
    ("Branch_2/Conv2d_0c_1x7", 224), ("Branch_2/Conv2d_0d_7x1", 224),
    ("Branch_2/Conv2d_0e_1x7", 256), ("Branch_3/Conv2d_0b_1x1", 128)]
_REDUCTION_B = [
    ("Branch_0/Conv2d_0a_1x1", 192), ("Branch_0/Conv2d_1a_3x3", 192),
    ("Branch_1/Conv2d_0a_1x1", 256), ("Branch_1/Conv2d_0b_1x7", 256),
    ("Branch_1/Conv2d_0c_7x1", 320), ("Branch_1/Conv2d_1a_3x3", 320)]
_INCEPTION_C = [
    ("Branch_0/Conv2d_0a_1x1", 256), ("Branch_1/Conv2d_0a_1x1", 384),
    ("Branch_1/Conv2d_0b_1x3", 256), ("Branch_1/Conv2d_0c_3x1", 256),
    ("Branch_2/Conv2d_0a_1x1", 384), ("Branch_2/Conv2d_0b_3x1", 448),
    ("Branch_2/Conv2d_0c_1x3", 512), ("Branch_2/Conv2d_0d_1x3", 256),
    ("Branch_2/Conv2d_0e_3x1", 256), ("Branch_3/Conv2d_0b_1x1", 256)]
SLIM_CONVS = dict(
    _STEM
    + [(f"Mixed_5{b}/{s}", w) for b in "bcde" for s, w in _INCEPTION_A]
    + [(f"Mixed_6a/{s}", w) for s, w in _REDUCTION_A]
    + [(f"Mixed_6{b}/{s}", w) for b in "bcdefgh" for s, w in _INCEPTION_B]
    + [(f"Mixed_7a/{s}", w) for s, w in _REDUCTION_B]
    + [(f"Mixed_7{b}/{s}", w) for b in "bcd" for s, w in _INCEPTION_C])
# Every conv has one batch norm of its width.
BATCH_NORM_CHANNELS = sum(SLIM_CONVS.values())
SLIM_NAMES = sorted(f"InceptionV4/{scope}/{suffix}" for scope in SLIM_CONVS for suffix in (
    "weights", "BatchNorm/beta", "BatchNorm/moving_mean", "BatchNorm/moving_variance"))

# Map sizes at 299 px, from the comments of slim's inception_v4_base.
ENDPOINT_SHAPES = {
    "Conv2d_1a_3x3.Relu": (149, 149, 32), "Conv2d_2a_3x3.Relu": (147, 147, 32),
    "Conv2d_2b_3x3.Relu": (147, 147, 64), "Mixed_3a.concat": (73, 73, 160),
    "Mixed_4a.concat": (71, 71, 192), "Mixed_5a.concat": (35, 35, 384),
    "Mixed_5e.concat": (35, 35, 384), "Mixed_6a.concat": (17, 17, 1024),
    "Mixed_6h.concat": (17, 17, 1024), "Mixed_7a.concat": (8, 8, 1536),
    "Mixed_7d.concat": (8, 8, 1536), "Logits.AvgPool_1a": (1536,)}

SIZE = inception_v4.MIN_IMAGE_SIZE  # The smallest input: the tests build small.

# What a slim checkpoint holds beside the backbone, which the loader skips.
_HEADS = {
    "InceptionV4/Logits/Logits/weights": np.zeros((1536, 1001), "float32"),
    "InceptionV4/Logits/Logits/biases": np.zeros((1001,), "float32"),
    "InceptionV4/AuxLogits/Conv2d_2a/weights": np.zeros((5, 5, 128, 768), "float32"),
    "InceptionV4/AuxLogits/Aux_logits/biases": np.zeros((1001,), "float32"),
    "global_step": np.array(123456, "int64"),
    # Training state, where a checkpoint keeps it: an optimizer slot, a weight's moving average.
    "InceptionV4/Conv2d_1a_3x3/weights/RMSProp": np.zeros((3, 3, 3, 32), "float32"),
    "InceptionV4/Conv2d_1a_3x3/weights/ExponentialMovingAverage": np.zeros((3, 3, 3, 32),
                                                                            "float32"),
}


def _write_checkpoint(path, tensors, *, tf1_format):
  names = sorted(tensors)
  values = [tf.constant(tensors[n]) for n in names]
  if tf1_format:  # One file, like inception_v4.ckpt in the slim archive.
    tf.raw_ops.Save(filename=path, tensor_names=names, data=values)
  else:  # PATH.index + PATH.data-00000-of-00001.
    tf.raw_ops.SaveV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=values)


def _random_tensors(model, seed):
  """A value for every slim name, shaped like the model's variable (kernels at the He scale,
  batch-norm statistics near a trained network's)."""
  rng = np.random.default_rng(seed)
  shapes = {name: tuple(v.shape) for name, v in inception_v4.slim_variables(model).items()}
  tensors = {}
  for name in SLIM_NAMES:
    shape = shapes[name]
    if name.endswith("/weights"):
      scale = np.sqrt(2.0 / np.prod(shape[:-1]))
      value = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    elif name.endswith("/moving_variance"):
      value = rng.random(shape, dtype=np.float32) * np.float32(1.5) + np.float32(0.5)
    else:
      value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.2)
    tensors[name] = value
  return tensors


class ArchitectureTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Names and shapes only: the network is built whole, but its variables' initial values
    # (41M) are left undrawn; clear_session drops them.
    with keras.StatelessScope(initialize_variables=False):
      cls.model = inception_v4.build_inception_v4(image_size=299)
    cls.addClassCleanup(keras.backend.clear_session)

  def test_parameter_count_equals_published(self):
    trainable = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
    statistics = sum(int(np.prod(v.shape)) for v in self.model.non_trainable_variables)
    # The published count less its classifier and the gammas slim does not have.
    self.assertEqual(trainable, PUBLISHED_PARAMS - PUBLISHED_CLASSIFIER - BATCH_NORM_CHANNELS)
    self.assertEqual(trainable, 41_111_232)
    self.assertEqual(statistics, 2 * BATCH_NORM_CHANNELS)  # Moving mean and variance.
    self.assertEqual(BATCH_NORM_CHANNELS, 31_584)

  def test_variables_have_the_slim_names(self):
    names = inception_v4.slim_variables(self.model)
    self.assertEqual(sorted(names), SLIM_NAMES)
    self.assertLen(names, 4 * 149)
    for scope, width in SLIM_CONVS.items():
      # Slim names each conv by its kernel: Conv2d_0b_1x7 is 1 x 7.
      kernel = tuple(int(k) for k in scope.rsplit("_", 1)[1].split("x"))
      shape = tuple(names[f"InceptionV4/{scope}/weights"].shape)
      self.assertEqual((shape[:2], shape[-1]), (kernel, width), scope)
    # Shapes a print of the released checkpoint's variables shows.
    self.assertEqual(names["InceptionV4/Mixed_7d/Branch_2/Conv2d_0e_3x1/weights"].shape,
                     (3, 1, 512, 256))
    self.assertEqual(names["InceptionV4/Mixed_7d/Branch_3/Conv2d_0b_1x1/weights"].shape,
                     (1, 1, 1536, 256))

  def test_endpoint_shapes_match_slim(self):
    for layer_name, shape in ENDPOINT_SHAPES.items():
      self.assertEqual(tuple(self.model.get_layer(layer_name).output.shape[1:]), shape,
                       layer_name)

  def test_too_small_images_are_refused(self):
    with self.assertRaisesRegex(ValueError, "at least 75 px.*--image_size=74"):
      inception_v4.build_inception_v4(image_size=74)


class CheckpointTest(tf.test.TestCase):
  """One model and one slim-like TF1 checkpoint (180 MB) for the class, the checkpoint in a
  Keras cache (`home`). The model holds `tensors` between tests: each test that assigns it
  assigns those again, and the failed load assigns nothing."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Loaded below (and again by the test of the loader, after zeroing it).
    cls.model = inception_v4.build_inception_v4(image_size=SIZE, random_init=False)
    cls.tensors = _random_tensors(cls.model, seed=0)
    cls.images = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    cls.home = tempfile.mkdtemp(prefix="inception_v4.", dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, cls.home, ignore_errors=True)
    os.makedirs(os.path.join(cls.home, "models"))
    cls.checkpoint = os.path.join(cls.home, "models", inception_v4.CHECKPOINT_FILE)
    _write_checkpoint(cls.checkpoint, {**cls.tensors, **_HEADS}, tf1_format=True)
    inception_v4.load_slim_checkpoint(cls.model, cls.checkpoint)

  def _load(self, tensors, *, tf1_format):
    path = os.path.join(self.create_tempdir().full_path, "inception_v4.ckpt")
    _write_checkpoint(path, tensors, tf1_format=tf1_format)
    inception_v4.load_slim_checkpoint(self.model, path)
    return path

  def _assert_holds(self, tensors, model=None):
    variables = inception_v4.slim_variables(model or self.model)
    for name in SLIM_NAMES:
      np.testing.assert_array_equal(variables[name].numpy(), tensors[name], err_msg=name)

  def test_loads_tf1_checkpoint_by_name_and_skips_the_heads(self):
    for variable in inception_v4.slim_variables(self.model).values():
      variable.assign(tf.zeros_like(variable))
    inception_v4.load_slim_checkpoint(self.model, self.checkpoint)  # With the heads.
    self._assert_holds(self.tensors)

  def test_weights_path_takes_a_tf2_checkpoint_prefix(self):
    other = {name: value + 1.0 for name, value in self.tensors.items()}
    path = os.path.join(self.create_tempdir().full_path, "model.ckpt-1000")
    _write_checkpoint(path, other, tf1_format=False)
    self.assertFalse(os.path.exists(path))  # Only PATH.index and PATH.data-*.
    spec = backbones.get_backbone_spec("inception_v4", image_size=SIZE)
    self._assert_holds(other, backbones.build_backbone(spec, weights=path))

  def test_conv_block_is_conv_then_batch_norm_without_scale_then_relu(self):
    block = keras.Model(self.model.input, self.model.get_layer("Conv2d_1a_3x3.Relu").output)
    got = block(self.images, training=False).numpy()
    scope = "InceptionV4/Conv2d_1a_3x3/"
    conv = tf.nn.conv2d(self.images, self.tensors[scope + "weights"], strides=2,
                        padding="VALID").numpy()
    mean, variance, beta = (self.tensors[scope + "BatchNorm/" + n]
                            for n in ("moving_mean", "moving_variance", "beta"))
    want = np.maximum((conv - mean) / np.sqrt(variance + 0.001) + beta, 0.0)
    self.assertAllClose(got, want, rtol=1e-5, atol=1e-5)

  def test_branch_pool_averages_the_valid_pixels_only(self):
    # Slim's avg_pool2d with SAME padding divides by the pixels inside the image.
    layers = ("Mixed_5a.concat", "Mixed_5b.Branch_3.AvgPool_0a_3x3")
    pool = keras.Model(self.model.input, [self.model.get_layer(n).output for n in layers])
    inputs, got = (t.numpy() for t in pool(self.images, training=False))
    padded = np.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    size = inputs.shape[1]
    want = np.stack([np.stack([np.nanmean(padded[:, i:i + 3, j:j + 3], axis=(1, 2))
                               for j in range(size)], 1) for i in range(size)], 1)
    self.assertEqual(got.shape, (2, 7, 7, 384))
    self.assertAllClose(got, want, rtol=1e-5, atol=1e-5)

  def test_imagenet_reads_the_checkpoint_from_the_keras_cache(self):
    spec = backbones.get_backbone_spec("inception_v4", image_size=SIZE)
    self.assertEqual(self.checkpoint,  # Spelled here: <KERAS_HOME>/models/inception_v4.ckpt.
                     os.path.join(self.home, "models", "inception_v4.ckpt"))
    with mock.patch.dict(os.environ, {"KERAS_HOME": self.home}):
      loaded = backbones.build_backbone(spec, weights="imagenet", seed=7)
    self.assertEqual(loaded.name, "inception_v4_backbone")
    want = self.model(self.images, training=False)
    self.assertEqual(want.shape, (2, 1536))
    self.assertAllClose(loaded(self.images, training=False), want, rtol=1e-5, atol=1e-5)

  def test_mismatched_checkpoint_names_every_problem_and_assigns_nothing(self):
    bad = dict(self.tensors)
    renamed = "InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_7x1/weights"
    bad["InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_1x7/weights"] = bad.pop(renamed)
    resized = "InceptionV4/Mixed_7d/Branch_3/Conv2d_0b_1x1/BatchNorm/beta"
    bad[resized] = np.zeros(255, "float32")
    bad["InceptionV4/Mixed_5b/Branch_0/Conv2d_0a_1x1/BatchNorm/gamma"] = np.ones(96, "float32")
    bad = {name: value + 1.0 for name, value in bad.items()}
    with self.assertRaises(ValueError) as raised:
      self._load(bad, tf1_format=False)
    message = str(raised.exception)
    self.assertIn("checkpoint variables with no layer (2): "
                  "InceptionV4/Mixed_5b/Branch_0/Conv2d_0a_1x1/BatchNorm/gamma, "
                  "InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_1x7/weights;", message)
    self.assertIn(f"model variables missing from the checkpoint (1): {renamed};", message)
    self.assertIn(f"shape mismatches (1): {resized} (checkpoint [255], model [256])", message)
    self.assertIn("inception_v4_2016_09_09.tar.gz", message)
    self._assert_holds(self.tensors)  # Checked before assigning: nothing changed.

  def test_unreadable_file_says_what_to_pass(self):
    path = os.path.join(self.create_tempdir().full_path, "model.h5")
    with open(path, "wb") as f:
      f.write(b"not a checkpoint")
    with self.assertRaisesRegex(ValueError, "not a readable TF checkpoint.*inception_v4.ckpt"):
      inception_v4.load_slim_checkpoint(self.model, path)

  def test_tf2_prefix_has_a_content_identity(self):
    # The feature cache keys on the weights' content; a prefix names files it must read.
    root = self.create_tempdir().full_path
    paths = [os.path.join(root, name) for name in ("a.ckpt", "b.ckpt", "c.ckpt")]
    for path, value in zip(paths, (1.0, 1.0, 2.0)):
      _write_checkpoint(path, {"w": np.full(3, value, "float32")}, tf1_format=False)
    identities = [identity.file_digest(p) for p in paths]
    self.assertEqual(identities[0], identities[1])  # Same content, another name.
    self.assertNotEqual(identities[0], identities[2])
    with self.assertRaisesRegex(FileNotFoundError, "No weights at"):
      identity.file_digest(os.path.join(root, "d.ckpt"))


if __name__ == "__main__":
  tf.test.main()
