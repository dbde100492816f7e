"""Inputs for the benchmarks: synthetic JPEG datasets read from disk as TFDS does,
class-structured synthetic features for the logistic-regression path, and loading of real
features (a `.npz` file or an entry of the project's feature cache) to rerun that path on.

Nothing here is downloaded. Images are smooth random colour fields with some texture
(compressed like photos, not like noise), JPEG-encoded by PIL at quality 90, of the sizes
TFDS serves (longer side 300-512 px, aspect 4:3, 3:4, 1:1 or 3:2), stored as
`tf.train.Example`s in a TFRecord file and parsed back into {"image": bytes, "label": int64},
the input format of `pipeline.make_pipeline`.
"""

import io
import os
from typing import Optional

import numpy as np
from PIL import Image
import tensorflow as tf

from tfhub_transfer import features as feature_cache

_ASPECTS = (4 / 3, 3 / 4, 1.0, 3 / 2)
_FEATURE_SPEC = {"image": tf.io.FixedLenFeature([], tf.string),
                 "label": tf.io.FixedLenFeature([], tf.int64)}


def encode_jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
  """One photo-like JPEG: a bicubic-upsampled coarse colour field plus fine texture."""
  coarse = rng.integers(0, 256, (max(height // 32, 2), max(width // 32, 2), 3), np.uint8)
  field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
  texture = rng.normal(0, 12, (height, width, 1)).astype(np.int16)
  pixels = np.clip(field + texture, 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def image_shape(rng: np.random.Generator, *, min_side: int = 300,
                max_side: int = 512) -> tuple[int, int]:
  longer = int(rng.integers(min_side, max_side + 1))
  aspect = _ASPECTS[rng.integers(len(_ASPECTS))]  # width / height.
  if aspect >= 1:
    return round(longer / aspect), longer
  return longer, round(longer * aspect)


def write_jpeg_tfrecord(path: str, num_images: int, *, num_classes: int = 10, seed: int = 0,
                        min_side: int = 300, max_side: int = 512) -> str:
  """Writes `num_images` synthetic JPEG examples to a TFRecord file; returns `path`."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(num_images):
      encoded = encode_jpeg(rng, *image_shape(rng, min_side=min_side, max_side=max_side))
      example = tf.train.Example(features=tf.train.Features(feature={
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % num_classes])),
      }))
      writer.write(example.SerializeToString())
  return path


def read_jpeg_tfrecord(path: str, *, num_examples: Optional[int] = None) -> tf.data.Dataset:
  """{"image": encoded bytes, "label": int64} streamed from `path`, in order.

  With `num_examples` larger than the file, the file is cycled: examples are read lazily,
  never held in memory all at once.
  """
  ds = tf.data.TFRecordDataset(path)
  if num_examples is not None:
    ds = ds.repeat().take(num_examples)
  return ds.map(lambda record: tf.io.parse_single_example(record, _FEATURE_SPEC),
                num_parallel_calls=tf.data.AUTOTUNE)


def make_class_features(num_examples: int, dim: int, num_classes: int, *, seed: int = 0,
                        noise: float = 1.6, latent_dim: int = 64,
                        density: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
  """Class-structured, non-negative features shaped like pooled post-ReLU activations.

  Each class has a centre in a `latent_dim`-dimensional space; an example is its centre plus
  isotropic noise (`noise` sets how much classes overlap), mapped to `dim` features by a
  sparse non-negative projection, plus per-feature noise, shifted and clipped at zero (about
  half the entries are 0, as after ReLU + average pooling of a real backbone). Labels are
  balanced and shuffled.

  Returns:
    (float32 features [N, dim], int64 labels [N]).
  """
  rng = np.random.default_rng(seed)
  labels = np.arange(num_examples) % num_classes
  rng.shuffle(labels)
  centres = rng.normal(0.0, 1.0, (num_classes, latent_dim))
  projection = (np.abs(rng.normal(0.0, 1.0, (latent_dim, dim)))
                * (rng.random((latent_dim, dim)) < density)) / np.sqrt(latent_dim * density)
  features = np.empty((num_examples, dim), np.float32)
  for start in range(0, num_examples, 8192):  # Chunks keep float64 temporaries small.
    rows = slice(start, min(start + 8192, num_examples))
    latent = centres[labels[rows]] + noise * rng.normal(0.0, 1.0, (len(labels[rows]), latent_dim))
    raw = latent @ projection + 0.5 * rng.normal(0.0, 1.0, (len(labels[rows]), dim)) - 0.5
    features[rows] = np.maximum(raw, 0.0)
  return features, labels.astype(np.int64)



def load_features(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Single-label features and labels to rerun figure 2 on.

  Args:
    path: a `.npz` file with arrays `features` [N, D] and `labels` [N] (integers), or a
      directory of the feature cache (`<workdir>/features/<key>/`, with meta.json,
      features.f32 and labels.npy), as a logreg run leaves it.

  Returns:
    (float32 features [N, D], int64 labels [N] in [0, C)).

  Raises:
    ValueError: a missing path, other arrays, or multi-label / non-integer labels.
  """
  if os.path.isdir(path):
    entry = feature_cache.load_cached(*os.path.split(os.path.normpath(path)))
    if entry is None:
      raise ValueError(f"{path} is a directory without meta.json: pass one entry of a feature "
                       f"cache (<workdir>/features/<key>/) or a .npz file.")
    features, labels = entry.features, entry.labels
  elif os.path.isfile(path):
    with np.load(path) as arrays:
      if not {"features", "labels"} <= set(arrays.files):
        raise ValueError(f"{path} holds arrays {sorted(arrays.files)}; figure 2 needs "
                         f"'features' [N, D] and 'labels' [N]: np.savez(path, "
                         f"features=..., labels=...).")
      features, labels = arrays["features"], arrays["labels"]
  else:
    raise ValueError(f"No features at {path!r}: pass a .npz file or a feature-cache entry "
                     f"directory (<workdir>/features/<key>/).")
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(f"{path}: expected features [N, D] and labels [N]; got "
                     f"{features.shape} and {labels.shape} (multi-label [N, C] labels are "
                     f"not compared: scikit-learn's side is a single softmax).")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: labels must be integers, got {labels.dtype}.")
  _, labels = np.unique(labels, return_inverse=True)  # Classes 0..C-1, in label order.
  return np.asarray(features, np.float32), labels.astype(np.int64)
