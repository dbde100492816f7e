"""Fakes the tests build themselves, and the environment of the subprocesses they start.

Nothing here touches the network.
"""

import atexit
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

# The checkout: the working directory and PYTHONPATH of the subprocesses tests start.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra):
  """`os.environ` for a child Python that imports this checkout, on CPU, with TF quiet.

  Args:
    **extra: more environment variables (e.g. KERASTUNER_TUNER_ID="chief").

  Returns:
    A new dict; `os.environ` is left alone.
  """
  return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
              CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)


_DIGITS_DATA_DIR = []


def digits_data_dir() -> str:
  """A TFDS data_dir holding `digits`, built once per test process, in a temporary directory
  removed when the process exits.

  Tests pass it as `data_dir=` / `--data_dir=` so `digits` is never built into the user's
  ~/tensorflow_datasets (TFDS's default), is built once per test file rather than once per
  test, and is never built by several subprocesses at once.
  """
  if not _DIGITS_DATA_DIR:
    from tfhub_transfer.data import datasets  # pylint: disable=g-import-not-at-top
    from tfhub_transfer.data import loading  # pylint: disable=g-import-not-at-top
    path = tempfile.mkdtemp(prefix="tfds.", dir=os.environ.get("TEST_TMPDIR"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    loading.load_splits(datasets.get_dataset_spec("digits"), data_dir=path)
    _DIGITS_DATA_DIR.append(path)
  return _DIGITS_DATA_DIR[0]


class _TinyFeatureModule(tf.Module):
  """A reusable-SavedModel image feature vector: conv -> batch norm -> ReLU -> mean pool."""

  def __init__(self, feature_dim, seed, grid):
    super().__init__()
    self.grid = grid
    rng = np.random.default_rng(seed)
    self.kernel = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, feature_dim)).astype("float32"),
                              name="conv/kernel")
    self.gamma = tf.Variable(tf.ones([feature_dim]), name="bn/gamma")
    self.beta = tf.Variable(tf.zeros([feature_dim]), name="bn/beta")
    self.moving_mean = tf.Variable(tf.zeros([feature_dim]), trainable=False,
                                   name="bn/moving_mean")
    self.moving_variance = tf.Variable(tf.ones([feature_dim]), trainable=False,
                                       name="bn/moving_variance")

  @tf.function
  def __call__(self, images, training=False):
    x = tf.nn.conv2d(images, self.kernel, strides=2, padding="SAME")
    if training:
      mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
      self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * mean)
      self.moving_variance.assign(0.9 * self.moving_variance + 0.1 * variance)
    else:
      mean, variance = self.moving_mean, self.moving_variance
    x = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, 1e-3)
    x = tf.nn.relu(x)
    if self.grid == 1:
      return tf.reduce_mean(x, axis=[1, 2])
    # Mean over each cell of a grid x grid partition: features that keep where things are.
    x = tf.image.resize(x, (self.grid, self.grid), antialias=True)  # Differentiable.
    return tf.reshape(x, (-1, self.grid * self.grid * x.shape[-1]))


def encoded_dataset(encoded_images, labels=None) -> tf.data.Dataset:
  """{"image": encoded bytes, "label": int64} examples, as `pipeline.make_pipeline` reads
  them; labels 0, 1, ... unless given."""
  labels = list(range(len(encoded_images))) if labels is None else labels
  return tf.data.Dataset.from_tensor_slices(
      {"image": tf.constant(encoded_images), "label": tf.constant(labels, tf.int64)})


def make_tiny_savedmodel(path, *, feature_dim=8, seed=0, grid=1):
  """Writes a reusable TF2 SavedModel (the TF Hub format) to `path` and returns `path`.

  Its features have `feature_dim * grid**2` entries: `feature_dim` channels pooled over a
  grid x grid partition of the image (grid 1: global average pooling).
  """
  module = _TinyFeatureModule(feature_dim, seed, grid)
  spec = tf.TensorSpec([None, None, None, 3], tf.float32)
  for training in (False, True):
    module.__call__.get_concrete_function(spec, training=training)
  # The Reusable SavedModel API: __call__ plus variable lists as attributes of the root.
  root = tf.train.Checkpoint(module=module)
  root.__call__ = module.__call__
  root.variables = list(module.variables)
  root.trainable_variables = list(module.trainable_variables)
  root.regularization_losses = []
  tf.saved_model.save(root, os.fspath(path))
  return os.fspath(path)
