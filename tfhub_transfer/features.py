"""Streamed feature extraction into an on-disk cache (the `logreg` regime's first phase).

A cache entry is a directory `<cache_dir>/<key>/` holding `features.f32` (raw float32 rows),
`labels.npy` and `meta.json`. It is written under a temporary name and renamed into place
only when complete, so an interrupted extraction never leaves an entry that reads as done.
Memory stays flat: each batch is written as it arrives.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from absl import logging

CACHE_FORMAT = 1


def file_identity(path: str) -> str:
  """Content hash of a weights file, or of every file under a SavedModel dir."""
  digest = hashlib.sha256()
  paths = [path] if os.path.isfile(path) else sorted(
      os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
  for p in paths:
    digest.update(os.path.relpath(p, path).encode())
    with open(p, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()[:16]


def cache_key(parts: dict[str, Any]) -> str:
  """A stable key from everything that changes the features."""
  blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class CachedFeatures:
  features: np.ndarray  # [N, D] float32, memory-mapped.
  labels: np.ndarray  # [N] int64 or [N, C] float32.
  path: str
  from_cache: bool
  seconds: float


def load_cached(cache_dir: str, key: str) -> Optional[CachedFeatures]:
  path = os.path.join(cache_dir, key)
  meta_path = os.path.join(path, "meta.json")
  if not os.path.exists(meta_path):
    return None
  with open(meta_path) as f:
    meta = json.load(f)
  features = np.memmap(os.path.join(path, "features.f32"), dtype=np.float32, mode="r",
                       shape=(meta["num_examples"], meta["feature_dim"]))
  labels = np.load(os.path.join(path, "labels.npy"))
  return CachedFeatures(features, labels, path, True, 0.0)


def extract_features(feature_fn, dataset: tf.data.Dataset, *, cache_dir: str, key: str,
                     num_batches: Optional[int] = None, description: str = "",
                     key_parts: Optional[dict[str, Any]] = None) -> CachedFeatures:
  """Returns cached features for `key`, extracting them from `dataset` if needed.

  Args:
    feature_fn: a (tf.function) mapping an images batch to features [B, D].
    dataset: batches of (images, labels), in a fixed order.
    cache_dir: the cache root.
    key: the entry name (see `cache_key`).
    num_batches: for the progress bar's ETA.
    description: shown in logs.
    key_parts: what the key was made from, stored in meta.json for humans.

  Returns:
    The features and labels, memory-mapped from the cache.
  """
  cached = load_cached(cache_dir, key)
  if cached is not None:
    logging.info("Feature cache hit for %s: %s", description, cached.path)
    return cached
  os.makedirs(cache_dir, exist_ok=True)
  start = time.perf_counter()
  tmp = tempfile.mkdtemp(prefix=f".{key}.partial-", dir=cache_dir)
  try:
    iterator = [iter(dataset)]  # In a list, so that the last reference can be handed off.
    num_examples, dim, labels = 0, None, []
    progbar = keras.utils.Progbar(num_batches, unit_name="batch")
    with open(os.path.join(tmp, "features.f32"), "wb") as out:
      for step, (images, batch_labels) in enumerate(iterator[0]):
        features = np.asarray(feature_fn(images), dtype=np.float32)
        if features.ndim != 2:
          raise ValueError(f"The backbone returned features of shape {features.shape}; "
                           f"pooled [batch, dim] features are expected.")
        if not np.all(np.isfinite(features)):
          raise ValueError(f"Non-finite features in batch {step} of {description}: check "
                           f"the weights and the input preprocessing.")
        dim = features.shape[1]
        out.write(features.tobytes())
        labels.append(np.asarray(batch_labels))
        num_examples += features.shape[0]
        progbar.update(step + 1)
    _release_in_background(iterator)
    if dim is None:
      raise ValueError(f"No examples to extract features from for {description}.")
    np.save(os.path.join(tmp, "labels.npy"), np.concatenate(labels))
    seconds = time.perf_counter() - start
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump({"num_examples": num_examples, "feature_dim": dim, "seconds": seconds,
                 "description": description, "key_parts": key_parts or {}}, f, indent=1)
    final = os.path.join(cache_dir, key)
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process finished the same entry first; theirs is as good as ours.
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  entry = load_cached(cache_dir, key)
  return dataclasses.replace(entry, from_cache=False, seconds=seconds)


def _release_in_background(holder: list) -> None:
  """Drops the last reference to an exhausted tf.data iterator on a daemon thread.

  Deleting it waits for tf.data's autotuning thread to wind down, which can take about a
  second (TF 2.21): measured, that stall was a third of a 256-image extraction on CPU.
  """
  threading.Thread(target=holder.clear, name="release-tf-data-iterator", daemon=True).start()


def make_feature_fn(model, strategy: tf.distribute.Strategy, *, jit_compile: bool = False):
  """A compiled images -> features function run on every replica of `strategy` (with XLA
  when `jit_compile`)."""

  @tf.function(reduce_retracing=True, jit_compile=jit_compile)
  def replica_fn(images):
    return model.features(images, training=False)

  if strategy.num_replicas_in_sync == 1:
    return replica_fn

  replicas = strategy.num_replicas_in_sync

  def feature_fn(images):
    # Pad the (possibly short, last) batch to a multiple of the replica count, split it over
    # replicas, gather the results back in order and drop the padding.
    size = int(images.shape[0])
    padded = tf.pad(images, [[0, -size % replicas], [0, 0], [0, 0], [0, 0]])
    shards = tf.split(padded, replicas)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: shards[ctx.replica_id_in_sync_group])
    return strategy.gather(strategy.run(replica_fn, args=(per_replica,)), axis=0)[:size]

  return feature_fn
