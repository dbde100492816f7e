"""Streamed feature extraction into an on-disk cache (the `logreg` regime's first phase).

A cache entry is a directory `<cache_dir>/<key>/` holding `features.f32` (raw float32 rows),
`labels.npy` and `meta.json`; meta.json records each file's size and CRC-32. `EntryWriter`
writes an entry under a temporary name (`.<key>.partial-*`) and renames it into place only when
complete, so an interrupted extraction never leaves an entry that reads as done. Memory stays
flat: each batch is written as it arrives.

Every open checks an entry against its meta.json (sizes, then CRC-32s: about 0.4 s per 400 MB
on one CPU core, the cost of reading the features once more). `extract_features` moves a
damaged entry aside to `<key>.corrupt-<time>` (logged with its path) and extracts it again,
and removes the partial folders of writers that are gone: on this host, those whose process
has exited; from other hosts (a shared workdir), those untouched for `STALE_PARTIAL_S`.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Callable, Optional
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from tfhub_transfer import faults
from tfhub_transfer import progress

CACHE_FORMAT = 1  # Part of every key: bump it to invalidate all entries.
FEATURES_FILE = "features.f32"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
OWNER_FILE = "owner.json"  # In a partial folder: who is writing it.
PARTIAL_MARK = ".partial-"
CORRUPT_MARK = ".corrupt-"
# A partial folder of another host (or of an unknown writer) untouched this long is abandoned.
STALE_PARTIAL_S = 3600.0
_READ_CHUNK = 1 << 23


class DamagedEntryError(ValueError):
  """A cache entry does not match its meta.json (truncated, overwritten, half copied)."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"Feature cache entry {path} is damaged: {reason}.")
    self.path = path
    self.reason = reason


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


def file_crc32(path: str) -> str:
  """CRC-32 of a file's bytes, as 8 hex digits (read in chunks: memory stays flat)."""
  crc = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_READ_CHUNK), b""):
      crc = zlib.crc32(chunk, crc)
  return f"{crc:08x}"


def load_cached(cache_dir: str, key: str) -> Optional[CachedFeatures]:
  """The entry `<cache_dir>/<key>`, checked against its meta.json; None if there is none.

  Raises:
    DamagedEntryError: the entry exists but is incomplete or altered (the message says how).
  """
  path = os.path.join(cache_dir, key)
  if not os.path.isdir(path):
    return None
  meta_path = os.path.join(path, META_FILE)
  if not os.path.exists(meta_path):
    raise DamagedEntryError(path, f"a directory without {META_FILE}")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    num_examples, dim = int(meta["num_examples"]), int(meta["feature_dim"])
  except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError.
    raise DamagedEntryError(path, f"{META_FILE} is not a cache entry's ({e})") from e
  files = meta.get("files")
  expected = num_examples * dim * 4
  actual = _size(os.path.join(path, FEATURES_FILE))
  if actual != expected:
    raise DamagedEntryError(path, f"{FEATURES_FILE} has {actual} bytes; {META_FILE} says "
                                  f"{num_examples} x {dim} float32 = {expected}")
  if not isinstance(files, dict):
    # Entries are trusted only with checksums: same-size garbage would pass a size check.
    raise DamagedEntryError(path, f"{META_FILE} has no checksums of its files")
  for name in (FEATURES_FILE, LABELS_FILE):
    want = files.get(name, {})
    size = _size(os.path.join(path, name))
    if size != want.get("bytes"):
      raise DamagedEntryError(path, f"{name} has {size} bytes; {META_FILE} says "
                                    f"{want.get('bytes')}")
    crc = file_crc32(os.path.join(path, name))
    if crc != want.get("crc32"):
      raise DamagedEntryError(path, f"{name} has CRC-32 {crc}; {META_FILE} says "
                                    f"{want.get('crc32')}")
  try:
    labels = np.load(os.path.join(path, LABELS_FILE))
  except (OSError, ValueError, EOFError) as e:
    raise DamagedEntryError(path, f"{LABELS_FILE} does not load ({e})") from e
  if labels.shape[:1] != (num_examples,):
    raise DamagedEntryError(path, f"{LABELS_FILE} has shape {labels.shape}; {META_FILE} says "
                                  f"{num_examples} examples")
  features = np.memmap(os.path.join(path, FEATURES_FILE), dtype=np.float32, mode="r",
                       shape=(num_examples, dim)) if num_examples else np.zeros(
                           (0, dim), np.float32)
  return CachedFeatures(features, labels, path, True, 0.0)


def _size(path: str) -> Optional[int]:
  try:
    return os.path.getsize(path)
  except OSError:
    return None


def move_aside(path: str, reason: str) -> Optional[str]:
  """Renames a damaged entry to `<path>.corrupt-<UTC time>` and logs it; returns the new path
  (None if another process moved or replaced it first)."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
  aside = f"{path}{CORRUPT_MARK}{stamp}-{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return None
  logging.warning("Feature cache entry %s is damaged (%s): moved it to %s and extracting it "
                  "again. Delete %s once you no longer need it.", path, reason, aside, aside)
  return aside


def remove_stale_partials(cache_dir: str, *, stale_s: float = STALE_PARTIAL_S) -> list[str]:
  """Removes the `.partial-` folders of writers that are gone; returns their paths.

  A folder is abandoned when its owner.json names this host and a process that has exited,
  or, for another host's folder (or one without owner.json), when nothing in it changed for
  `stale_s` seconds. A live writer's folder is never removed.
  """
  try:
    names = os.listdir(cache_dir)
  except FileNotFoundError:
    return []
  removed = []
  for name in names:
    path = os.path.join(cache_dir, name)
    if name.startswith(".") and PARTIAL_MARK in name and _abandoned(path, stale_s):
      shutil.rmtree(path, ignore_errors=True)
      logging.info("Removed %s, left by an interrupted extraction.", path)
      removed.append(path)
  return removed


def _abandoned(path: str, stale_s: float) -> bool:
  try:
    with open(os.path.join(path, OWNER_FILE)) as f:
      owner = json.load(f)
    if owner["host"] == socket.gethostname():
      return not _process_alive(int(owner["pid"]))
  except (OSError, ValueError, KeyError, TypeError):
    pass  # No (readable) owner: judge by age.
  try:
    times = [os.path.getmtime(path)] + [os.path.getmtime(os.path.join(path, f))
                                        for f in os.listdir(path)]
  except OSError:
    return False  # Being removed or renamed by its writer right now.
  return time.time() - max(times) > stale_s


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process.
  return True


class EntryWriter:
  """Writes one cache entry: rows are streamed in, and the entry appears complete or not at
  all.

      with EntryWriter(cache_dir, key, description="resnet_50/dtd/train") as writer:
        for images, labels in batches:
          writer.append(feature_fn(images), labels)
        entry = writer.commit()

  Leaving the `with` block without `commit()` (an exception, Ctrl-C) removes the partial
  folder; a killed process leaves it for `remove_stale_partials`.

  Args:
    cache_dir: the cache root (created if missing).
    key: the entry name (see `cache_key`).
    description: shown in logs and stored in meta.json.
    key_parts: what the key was made from, stored in meta.json for humans.
  """

  def __init__(self, cache_dir: str, key: str, *, description: str = "",
               key_parts: Optional[dict[str, Any]] = None):
    os.makedirs(cache_dir, exist_ok=True)
    self.cache_dir, self.key = cache_dir, key
    self.description, self.key_parts = description, key_parts or {}
    self.final_path = os.path.join(cache_dir, key)
    self.tmp = tempfile.mkdtemp(prefix=f".{key}{PARTIAL_MARK}", dir=cache_dir)
    with open(os.path.join(self.tmp, OWNER_FILE), "w") as f:
      json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    self._out = open(os.path.join(self.tmp, FEATURES_FILE), "wb")
    self._crc, self._bytes, self._labels = 0, 0, []
    self.num_examples, self.dim = 0, None
    self._start = time.perf_counter()

  def append(self, features, labels) -> None:
    """Appends a batch: features [B, D] (finite) and their labels [B] or [B, C].

    Raises:
      ValueError: features that are not [B, D], change D, are not finite, or a batch whose
        labels do not match it.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or (self.dim is not None and features.shape[1] != self.dim):
      raise ValueError(f"{self.description}: features of shape {features.shape}; pooled "
                       f"[batch, {self.dim or 'dim'}] features are expected.")
    if labels.shape[:1] != features.shape[:1]:
      raise ValueError(f"{self.description}: {features.shape[0]} feature rows but labels of "
                       f"shape {labels.shape}.")
    if not np.all(np.isfinite(features)):
      raise ValueError(f"Non-finite features in batch {len(self._labels)} of "
                       f"{self.description}: check the weights and the input preprocessing.")
    data = features.tobytes()
    self._out.write(data)
    self._crc = zlib.crc32(data, self._crc)
    self._bytes += len(data)
    self._labels.append(labels)
    self.num_examples += features.shape[0]
    self.dim = features.shape[1]

  def commit(self) -> CachedFeatures:
    """Writes labels and meta.json and renames the entry into place; returns it (from
    `load_cached`, so checked). If another process committed the same key first, theirs is
    kept: it holds the same features.

    Raises:
      ValueError: no rows were appended.
    """
    self._out.close()
    if self.dim is None:
      raise ValueError(f"No examples to extract features from for {self.description}.")
    labels_path = os.path.join(self.tmp, LABELS_FILE)
    np.save(labels_path, np.concatenate(self._labels))
    seconds = time.perf_counter() - self._start
    files = {FEATURES_FILE: {"bytes": self._bytes, "crc32": f"{self._crc:08x}"},
             LABELS_FILE: {"bytes": os.path.getsize(labels_path),
                           "crc32": file_crc32(labels_path)}}
    with open(os.path.join(self.tmp, META_FILE), "w") as f:
      json.dump({"num_examples": self.num_examples, "feature_dim": self.dim,
                 "seconds": seconds, "description": self.description,
                 "key_parts": self.key_parts, "files": files}, f, indent=1)
    os.remove(os.path.join(self.tmp, OWNER_FILE))
    for _ in range(2):
      try:
        os.rename(self.tmp, self.final_path)
        self.tmp = None
        break
      except OSError:
        if not os.path.isdir(self.final_path):
          raise
      # Another process finished the same entry first; theirs is as good as ours, unless it
      # is damaged, in which case it is moved aside and ours takes its place.
      try:
        if load_cached(self.cache_dir, self.key) is not None:
          break
      except DamagedEntryError as e:
        move_aside(e.path, e.reason)
    self.abort()
    entry = load_cached(self.cache_dir, self.key)
    return dataclasses.replace(entry, from_cache=False, seconds=seconds)

  def abort(self) -> None:
    """Removes the partial folder (nothing is left)."""
    self._out.close()
    if self.tmp is not None:
      shutil.rmtree(self.tmp, ignore_errors=True)
      self.tmp = None

  def __enter__(self) -> "EntryWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.abort()


def extract_features(feature_fn, dataset: tf.data.Dataset, *, cache_dir: str, key: str,
                     num_batches: Optional[int] = None, description: str = "",
                     key_parts: Optional[dict[str, Any]] = None) -> CachedFeatures:
  """Returns cached features for `key`, extracting them from `dataset` if needed.

  A damaged entry is moved aside and extracted again; partial folders of writers that are
  gone are removed first (`remove_stale_partials`).

  Args:
    feature_fn: a (tf.function) mapping an images batch to features [B, D].
    dataset: batches of (images, labels), in a fixed order.
    cache_dir: the cache root.
    key: the entry name (see `cache_key`).
    num_batches: for the progress ETA (a live bar on a terminal, log lines otherwise).
    description: shown in logs.
    key_parts: what the key was made from, stored in meta.json for humans.

  Returns:
    The features and labels, memory-mapped from the cache.

  Raises:
    faults.MachineFault: the disk is full (the message names the cache and what to free).
  """
  remove_stale_partials(cache_dir)
  try:
    cached = load_cached(cache_dir, key)
  except DamagedEntryError as e:
    move_aside(e.path, e.reason)
    cached = None
  if cached is not None:
    logging.info("Feature cache hit for %s: %s", description, cached.path)
    return cached
  try:
    with EntryWriter(cache_dir, key, description=description, key_parts=key_parts) as writer:
      iterator = [iter(dataset)]  # In a list, so that the last reference can be handed off.
      bar = progress.Progress(num_batches, description=f"extract {description}", unit="batch")
      steps = 0
      for steps, (images, batch_labels) in enumerate(iterator[0], 1):
        faults.raise_if_interrupted()  # One a signal raised that came out as nothing.
        writer.append(np.asarray(feature_fn(images), dtype=np.float32), batch_labels)
        bar.update(steps)
      bar.finish(steps)
      release_in_background(iterator)
      return writer.commit()
  except OSError as e:  # The writer has removed its partial entry.
    if not faults.is_disk_full(e):
      raise
    raise faults.disk_full(
        e, path=cache_dir, writing=f"the feature cache entry of {description or key}",
        to_free=f"entries of models you no longer compare, and any *{CORRUPT_MARK}* folders, "
                f"in {cache_dir}") from e


def release_in_background(holder: list) -> None:
  """Drops the last reference to an exhausted tf.data iterator on a daemon thread.

  Deleting it waits for tf.data's autotuning thread to wind down, which can take about a
  second (TF 2.21): measured, that stall was a third of a 256-image extraction on CPU.
  """
  threading.Thread(target=holder.clear, name="release-tf-data-iterator", daemon=True).start()


def make_feature_fn(model, strategy: tf.distribute.Strategy, *, jit_compile: bool = False,
                    batch_size: Optional[int] = None,
                    inputs_fn: Optional[Callable[[Any], tf.Tensor]] = None):
  """A compiled images -> features function run on every replica of `strategy` (with XLA
  when `jit_compile`).

  With `batch_size`, every call runs one shape: a shorter batch (a split's last) is padded
  with zero images to `batch_size`, rounded up to a multiple of the replicas, and the
  padding's rows are dropped from the result. The function is then traced, and with XLA
  compiled, once per cell instead of once per batch shape. Measured on 2 shared CPU cores
  (MobileNetV2 at 96 px, XLA, batch 16): first batch 6.1 s (the compile), next 1.2 s; a
  short batch of 5 unpadded 7.2 s (a second compile), padded 1.2 s. Rows are independent at
  inference (batch norm uses its moving statistics), so the padding does not change the
  real rows' features.

  Args:
    model: a `TransferHead` (its `features`).
    strategy: the replicas to split each batch over.
    jit_compile: compile with XLA.
    batch_size: the pipeline's batch size (None: run each batch at its own shape).
    inputs_fn: what the batches are turned into on each replica, in the compiled function,
      before the backbone: e.g. `device_resample.inputs_fn` for batches of windows
      (`resize_on_device`); a batch is then any nest of tensors of one batch size.
  """

  @tf.function(reduce_retracing=True, jit_compile=jit_compile)
  def replica_fn(images):
    if inputs_fn is not None:
      images = inputs_fn(images)
    return model.features(images, training=False)

  replicas = strategy.num_replicas_in_sync

  def feature_fn(images):
    size = int(tf.nest.flatten(images)[0].shape[0])
    target = -(-max(size, batch_size or 0) // replicas) * replicas
    if target > size:
      images = tf.nest.map_structure(
          lambda t: tf.pad(t, [[0, target - size]] + [[0, 0]] * (len(t.shape) - 1)), images)
    if replicas == 1:
      return replica_fn(images)[:size]
    # Split the batch over replicas, gather the results back in order, drop the padding.
    shards = [tf.split(t, replicas) for t in tf.nest.flatten(images)]
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.pack_sequence_as(
            images, [parts[ctx.replica_id_in_sync_group] for parts in shards]))
    return strategy.gather(strategy.run(replica_fn, args=(per_replica,)), axis=0)[:size]

  return feature_fn
