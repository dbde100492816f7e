"""Every path in a workdir, in one place: `Workdir`.

  <workdir>/results/<host>.sqlite   each host's results store (`store.ResultsStore`)
  <workdir>/predictions/<cell>.*.npz  test predictions of each ok cell (`predictions`)
  <workdir>/features/<key>/           the feature cache (`features`)
  <workdir>/folders/<key>.json        validated listings of `folder:` datasets
  <workdir>/runs/<cell>/              checkpoints, backups, TensorBoard logs of a cell
  <workdir>/tuner/<cell>/             keras-tuner's state of a cell's search
  <workdir>/logs/                     `--parallel_trials`: its config, processes' logs, pids
  <workdir>/report/                   `--mode=report`'s default output

A cell's folder name (`cell_dirname`) is readable and always ends in a hash of its whole key,
so two different keys never share tuner state, checkpoints, logs or predictions. A path read
from a stored record (a store file may come from another host) is used only if it resolves
inside the workdir (`Workdir.resolve`). TF-free.
"""

import dataclasses
import hashlib
import json
import os
import re
from typing import Sequence

# File names are at most 255 bytes on common filesystems; a cell's name leaves room for the
# suffixes added to it (a predictions file's ".<token>.npz", a temporary name's prefix).
_READABLE_CHARS = 96
_HASH_CHARS = 16
# The workdir's folders (see the module docstring).
RESULTS_DIR = "results"
PREDICTIONS_DIR = "predictions"
FEATURES_DIR = "features"
FOLDERS_DIR = "folders"
RUNS_DIR = "runs"
TUNER_DIR = "tuner"
LOGS_DIR = "logs"
REPORT_DIR = "report"


class OutsideWorkdirError(ValueError):
  """A path read from a stored record points outside the workdir."""


def cell_dirname(key: Sequence) -> str:
  """A folder name for a cell key (its tuner state, checkpoints, logs, predictions).

  A readable prefix (the key's fields, other characters as `_`, at most 96 of them), then a
  hash of the exact key: keys differing in punctuation, case or length get distinct names.
  """
  fields = [str(v) for v in key]
  readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "__".join(fields))[:_READABLE_CHARS]
  digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:_HASH_CHARS]
  return f"{readable.strip('._')}__{digest}"


@dataclasses.dataclass(frozen=True)
class Workdir:
  """A workdir's layout (see the module docstring). Nothing is created until written."""
  root: str

  @property
  def results(self) -> str:
    return os.path.join(self.root, RESULTS_DIR)

  @property
  def predictions(self) -> str:
    return os.path.join(self.root, PREDICTIONS_DIR)

  @property
  def features(self) -> str:
    return os.path.join(self.root, FEATURES_DIR)

  @property
  def folders(self) -> str:
    return os.path.join(self.root, FOLDERS_DIR)

  @property
  def runs(self) -> str:
    return os.path.join(self.root, RUNS_DIR)

  @property
  def tuner(self) -> str:
    return os.path.join(self.root, TUNER_DIR)

  @property
  def logs(self) -> str:
    return os.path.join(self.root, LOGS_DIR)

  @property
  def report(self) -> str:
    return os.path.join(self.root, REPORT_DIR)

  def store_path(self, host: str) -> str:
    return os.path.join(self.results, f"{host}.sqlite")

  def cell_dir(self, key: Sequence) -> str:
    """The cell's checkpoints, backups and TensorBoard logs."""
    return os.path.join(self.runs, cell_dirname(key))

  def cell_folders(self, key: Sequence) -> list[str]:
    """Every folder of the workdir that holds the cell's state (for `--mode=forget`)."""
    return [os.path.join(parent, cell_dirname(key)) for parent in (self.runs, self.tuner)]

  def resolve(self, relative: str) -> str:
    """The absolute path of a path stored relative to the workdir.

    Raises:
      OutsideWorkdirError: it is absolute, or leads (through `..` or a symlink) outside.
    """
    if not isinstance(relative, str) or not relative or os.path.isabs(relative):
      raise OutsideWorkdirError(f"{relative!r} is not a path relative to the workdir")
    root = os.path.realpath(self.root)
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root or path == root:
      raise OutsideWorkdirError(f"{relative!r} leads outside the workdir {self.root}")
    return path
