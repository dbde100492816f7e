"""Per-example test predictions of a cell: what tests between models read instead of rerunning.

Every `ok` cell stores its test-split predictions in one compressed `.npz` in the workdir,
`<workdir>/predictions/<cell id>.<token>.npz`, and its record names the file relative to the
workdir (`record.predictions["path"]`); a path that leads outside the workdir (a store file
copied from elsewhere can name any file) is never read or deleted: the record is reported as
damaged instead. The arrays:

  labels     single-label: int32 [N] classes; multi-label: int8 [N, C] with 1 positive,
             0 negative, -1 ignored by the metric (VOC's difficult-only classes).
  predicted  single-label: int32 [N], the highest-scoring class.
  scores     multi-label: float16 [N, C] logits (mAP needs the ranking; accuracy their sign).

A file is written under a temporary name and renamed into place (`save`), so a crash leaves
either the whole file or none; each run writes a new name, so a rerun never overwrites the
file a stored record points to. The store removes the file with its record
(`store.ResultsStore.delete`, `replace`). No TensorFlow here: the report reads these.
"""

import dataclasses
import os
import tempfile
from typing import Any, Mapping, Optional
import uuid

from absl import logging
import numpy as np

from tfhub_transfer.results import workdir as workdir_lib

PREDICTIONS_DIR = workdir_lib.PREDICTIONS_DIR
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Predictions:
  """One cell's test predictions (see the module docstring for the arrays)."""
  labels: np.ndarray
  predicted: Optional[np.ndarray] = None
  scores: Optional[np.ndarray] = None

  @property
  def multi_label(self) -> bool:
    return self.labels.ndim == 2

  def __len__(self) -> int:
    return len(self.labels)

  def correct(self) -> np.ndarray:
    """Per-example correctness: bool [N] (single-label), or [N, C] for multi-label, where
    an entry is right when its logit's sign matches the label (ignored entries: False)."""
    if not self.multi_label:
      return self.predicted == self.labels
    return ((self.scores > 0) == (self.labels == 1)) & (self.labels != -1)


def from_scores(labels: np.ndarray, scores: np.ndarray, *, multi_label: bool) -> Predictions:
  """The compact form of a model's test labels and scores [N, C]."""
  labels, scores = np.asarray(labels), np.asarray(scores)
  if len(labels) != len(scores):
    raise ValueError(f"{len(labels)} labels but {len(scores)} rows of scores.")
  if multi_label:
    return Predictions(labels=labels.astype(np.int8), scores=scores.astype(np.float16))
  return Predictions(labels=labels.astype(np.int32),
                     predicted=np.argmax(scores, axis=1).astype(np.int32))


def save(directory: str, name: str, predictions: Predictions) -> str:
  """Writes `<directory>/<name>.<random token>.npz` atomically; returns its file name.

  Args:
    directory: the predictions folder (created if missing).
    name: a file-name-safe stem, e.g. the cell id.
    predictions: what to write.
  """
  os.makedirs(directory, exist_ok=True)
  filename = f"{name}.{uuid.uuid4().hex[:8]}.npz"
  arrays = {"format": np.array(FORMAT), "labels": predictions.labels}
  for key in ("predicted", "scores"):
    if getattr(predictions, key) is not None:
      arrays[key] = getattr(predictions, key)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, filename))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return filename


def load(path: str) -> Predictions:
  """Reads a file written by `save`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a predictions file of a known format.
  """
  with np.load(path) as data:
    if "labels" not in data.files or "format" not in data.files or int(
        data["format"]) != FORMAT:
      raise ValueError(f"{path} is not a tfhub_transfer predictions file (format {FORMAT}).")
    return Predictions(labels=data["labels"],
                       predicted=data["predicted"] if "predicted" in data.files else None,
                       scores=data["scores"] if "scores" in data.files else None)


def entry(filename: str, predictions: Predictions) -> dict[str, Any]:
  """The record's `predictions` field for a file saved under `PREDICTIONS_DIR`."""
  return {"path": f"{PREDICTIONS_DIR}/{filename}", "examples": len(predictions),
          "format": FORMAT}


def path_of(store_dir: str, record: Mapping[str, Any]) -> Optional[str]:
  """The absolute path of a record's predictions file (None if it names none).

  Raises:
    OutsideWorkdirError: the record names a file outside `store_dir`.
  """
  relative = (record.get("predictions") or {}).get("path")
  return workdir_lib.Workdir(store_dir).resolve(relative) if relative else None


def _checked_path(store_dir: str, record: Mapping[str, Any]) -> Optional[str]:
  """`path_of`, or None (logged, naming the record) where the path leads outside."""
  try:
    return path_of(store_dir, record)
  except workdir_lib.OutsideWorkdirError as e:
    logging.warning("Damaged record %s: its predictions path %s; the file is neither read "
                    "nor deleted.", tuple(record.get(k) for k in ("model", "dataset",
                                                                   "regime", "seed")), e)
    return None


def load_for_record(store_dir: str, record: Mapping[str, Any]) -> Optional[Predictions]:
  """A record's test predictions; None when it has none, its file is gone, or its path
  leads outside the workdir (logged)."""
  path = _checked_path(store_dir, record)
  if path is None or not os.path.exists(path):
    return None
  return load(path)


def remove_for_record(store_dir: str, record: Optional[Mapping[str, Any]], *,
                      keep: Optional[Mapping[str, Any]] = None) -> bool:
  """Deletes a record's predictions file (unless `keep` names the same file).

  Returns:
    Whether a file was removed.
  """
  path = _checked_path(store_dir, record or {})
  if path is None or (keep is not None and path == _checked_path(store_dir, keep)):
    return False
  try:
    os.remove(path)
    return True
  except FileNotFoundError:
    return False
