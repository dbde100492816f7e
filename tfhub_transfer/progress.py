"""Progress of long loops: a live bar on a terminal, plain periodic log lines otherwise.

Keras's `Progbar` counts any POSIX system as a live display (`"posix" in sys.modules`), so
under a pipe or in a log file it still writes carriage returns, backspaces and colour codes.
Here the choice is made once, from whether stdout is a terminal (or a notebook): a terminal
gets Keras's live bar, anything else one plain absl log line every `LOG_INTERVAL_S` seconds
and one at the end. TF-free until a live bar is drawn.
"""

import logging as py_logging
import os
import sys
import time
from typing import Optional

from absl import logging

LOG_INTERVAL_S = 30.0


class OwnInfoOnly(py_logging.Filter):
  """Drops INFO lines of other libraries (TFDS reads, TensorFlow notices): what is left is
  this package's progress, and every library's warnings and errors."""

  def filter(self, record):
    return (record.levelno > py_logging.INFO or
            f"{os.sep}tfhub_transfer{os.sep}" in record.pathname)


def show_own_info_only() -> None:
  """At absl's default verbosity (0 or less), installs `OwnInfoOnly` on absl's handler;
  --verbosity=1 shows every line."""
  if logging.get_verbosity() <= logging.INFO:
    logging.get_absl_handler().addFilter(OwnInfoOnly())


def is_live() -> bool:
  """True when progress can be redrawn in place: stdout is a terminal, or a notebook."""
  return sys.stdout.isatty() or _in_notebook()


def _in_notebook() -> bool:
  """This process is a running IPython kernel (not merely one that imported ipykernel, as a
  test runner that drives notebooks does)."""
  ipython = sys.modules.get("IPython")
  shell = ipython.get_ipython() if ipython is not None else None
  return getattr(shell, "kernel", None) is not None


def keras_verbosity() -> int:
  """`verbose` for Keras `fit`: live bars on a terminal, one plain line per epoch otherwise."""
  return 1 if is_live() else 2


class Progress:
  """Counts done units of a loop and shows it: `update(done)` after each unit.

  Args:
    total: number of units, or None when unknown.
    description: what is being done, e.g. "extract digits/train".
    unit: the unit's name, e.g. "batch".
    live: draw a live bar (default: `is_live()`).
    interval_s: seconds between plain lines.
  """

  def __init__(self, total: Optional[int], *, description: str, unit: str = "batch",
               live: Optional[bool] = None, interval_s: float = LOG_INTERVAL_S):
    self.total = total
    self.description = description
    self.unit = unit
    self.interval_s = interval_s
    self._start = time.perf_counter()
    self._last_line = self._start
    self._bar = None
    if is_live() if live is None else live:
      import keras  # pylint: disable=g-import-not-at-top
      self._bar = keras.utils.Progbar(total, unit_name=unit)

  def update(self, done: int) -> None:
    if self._bar is not None:
      self._bar.update(done)
      return
    now = time.perf_counter()
    finished = self.total is not None and done >= self.total
    if finished or now - self._last_line >= self.interval_s:
      self._last_line = now
      logging.info("%s", self.line(done, now - self._start))

  def finish(self, done: int) -> None:
    """Ends the bar or writes the last line, unless `update` reached the total already."""
    if self.total is not None and done >= self.total:
      return
    if self._bar is not None:
      self._bar.update(done, finalize=True)
    else:
      logging.info("%s", self.line(done, time.perf_counter() - self._start))

  def line(self, done: int, elapsed: float) -> str:
    """E.g. 'extract digits/train: batch 12/40 (30%), 31 s, ETA 72 s'."""
    if not self.total:
      return f"{self.description}: {self.unit} {done}, {elapsed:.0f} s"
    text = (f"{self.description}: {self.unit} {done}/{self.total} "
            f"({100 * done / self.total:.0f}%), {elapsed:.0f} s")
    if 0 < done < self.total:
      text += f", ETA {elapsed / done * (self.total - done):.0f} s"
    return text
