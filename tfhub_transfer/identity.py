"""What a result is a result of: a cell's key, made of the content it ran on, never of a name.

A cell's key (`CellKey`: model, dataset, regime, seed, protocol) keys its stored result, its
trials, its score row and its folders in the workdir. Its `model` and `dataset` fields are
identities, not the names a user typed:

  * a weights file (or SavedModel directory, or TF checkpoint prefix) given as `--weights` is
    named by a hash of its content (`file_digest`, computed once per file and remembered by
    real path, size and modification time), so two `best.h5` files are two cells and one file
    reached by two paths is one cell;
  * a `hub:` model that is a local SavedModel directory likewise (a remote handle is its URL);
  * a `folder:` dataset by its canonical real path and its listing key (every file's path,
    size and modification time, `folder.listing_key`), so `folder:x`, `folder:x/` and
    `folder:./x` are one cell, and a folder changed after its result is a new cell;
  * a registry dataset (TFDS, the package's builders) by its name and a hash of the fields of
    its spec that define the data (TFDS name and config, splits, validation fraction, label
    keys), so a changed split spec is a new cell.

Readable labels (`model_label`, `dataset_label`: `best.h5`, `folder:data/birds`) go with each
record for logs and tables; `sources` says where a file or folder was, so the report can mark
a result whose file or folder has changed since as superseded.

TF-free: the CLI computes keys when it plans a grid.
"""

import dataclasses
import functools
import glob
import hashlib
import json
import os
from typing import Any

from tfhub_transfer import regimes
from tfhub_transfer.data import datasets
from tfhub_transfer.data import folder
from tfhub_transfer.results.records import CellKey

HUB_PREFIX = "hub:"
DIGEST_CHARS = 16  # Hex digits of a content hash in a key: 64 bits.
# Spec fields that define which examples and labels a registry dataset has.
_DATA_FIELDS = ("source", "tfds_name", "image_key", "label_key", "difficult_label_key",
                "multi_label", "train_split", "val_split", "test_split", "val_fraction",
                "num_classes")


def _files_of(path: str) -> list[tuple[str, str]]:
  """(name, file) pairs of a weights file, a directory tree, or a checkpoint prefix."""
  if os.path.isfile(path):
    return [(".", path)]
  if os.path.isdir(path):
    return sorted((os.path.relpath(os.path.join(root, f), path), os.path.join(root, f))
                  for root, _, files in os.walk(path) for f in files)
  return sorted((p[len(path):], p) for p in glob.glob(glob.escape(path) + ".*"))


def file_digest(path: str) -> str:
  """Content hash of a weights file, of every file under a SavedModel dir, or of the files of
  a TF2 checkpoint prefix (PATH.index, PATH.data-*: PATH itself does not exist).

  Computed once per file state: remembered by each file's real path, size and mtime.

  Raises:
    FileNotFoundError: nothing at `path`.
  """
  named = _files_of(path)
  if not named:
    raise FileNotFoundError(f"No weights at {path!r} (no file, directory or checkpoint "
                            f"prefix with files {path}.*).")
  stats = [(name, p, os.stat(p)) for name, p in named]
  states = tuple((name, os.path.realpath(p), st.st_size, st.st_mtime_ns) for name, p, st in stats)
  return _digest_of(states)


@functools.lru_cache(maxsize=256)
def _digest_of(states: tuple[tuple[str, str, int, int], ...]) -> str:
  digest = hashlib.sha256()
  for name, real, _, _ in states:
    digest.update(name.encode())
    with open(real, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()[:DIGEST_CHARS]


def is_local_path(handle: str) -> bool:
  """Whether a `hub:` handle or `--weights` value names something on this machine."""
  return "://" not in handle and os.path.exists(handle) or bool(glob.glob(
      glob.escape(handle) + ".index"))


def weights_part(weights: str) -> str:
  """`imagenet`, `random`, or `sha256:<hash>` of a weights path's content."""
  if weights in (regimes.IMAGENET, regimes.RANDOM):
    return weights
  return "sha256:" + file_digest(weights)


def _hash_json(value: Any) -> str:
  blob = json.dumps(value, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:DIGEST_CHARS]


def network_id(model: str) -> str:
  """`--model` as an identity: a local `hub:` SavedModel directory by its content."""
  if model.startswith(HUB_PREFIX) and is_local_path(model[len(HUB_PREFIX):]):
    return f"{HUB_PREFIX}sha256:{file_digest(model[len(HUB_PREFIX):])}"
  return model


def dataset_id(name: str) -> str:
  """`--dataset` as an identity (see the module docstring).

  Raises:
    ValueError, FileNotFoundError: as `datasets.get_dataset_spec`.
  """
  spec = datasets.get_dataset_spec(name)
  if spec.source == datasets.FOLDER:
    real = os.path.realpath(spec.folder)
    return f"{datasets.FOLDER_PREFIX}{real}@{folder.state_key(folder.describe_layout(real))}"
  data = {f: getattr(spec, f) for f in _DATA_FIELDS}
  return f"{spec.name}@{_hash_json(data)[:8]}"


def dataset_label(name: str) -> str:
  """A `--dataset` value for display: a folder path without a trailing separator."""
  if name.startswith(datasets.FOLDER_PREFIX):
    path = name[len(datasets.FOLDER_PREFIX):]
    return datasets.FOLDER_PREFIX + (os.path.normpath(path) if path else path)
  return name


def dataset_source(name: str) -> str:
  """Where a dataset's examples come from: a folder's real path, else its name."""
  if name.startswith(datasets.FOLDER_PREFIX):
    path = os.path.expanduser(name[len(datasets.FOLDER_PREFIX):])
    return datasets.FOLDER_PREFIX + os.path.realpath(path)
  return name


def weights_source(weights: str) -> str:
  """Where weights come from: a path's real path, else `imagenet` / `random`."""
  if weights in (regimes.IMAGENET, regimes.RANDOM):
    return weights
  return os.path.realpath(weights)


@dataclasses.dataclass(frozen=True)
class Identity:
  """A cell's identities, labels and sources, as `ExperimentConfig.identity` resolves them.

  Attributes:
    key: the store key.
    model_label, dataset_label: the same, readable (`best.h5`, `folder:data/birds`).
    sources: "model" (the network plus its weights' real path) and "dataset" (a folder's
      real path, else the name): two keys with the same sources are one cell's results
      before and after its file or folder changed.
  """
  key: CellKey
  model_label: str
  dataset_label: str
  sources: dict[str, str]
