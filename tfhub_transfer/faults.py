"""Faults of the machine or of the process, not of a cell: a full disk, a SIGTERM.

A cell that fails (bad data, NaN, out of memory) is stored as a `failed` row and the sweep
goes on. A full disk is not the cell's doing, and the next cell would hit it too: it is raised
as `MachineFault`, stores no row, stops the run, and the CLI prints one line naming the path
and what to free (exit 1). SIGTERM, which SLURM and Kubernetes send before they kill, raises
`Terminated` in the main thread: a `KeyboardInterrupt`, so everything that cleans up after
Ctrl-C (partial cache entries, child processes) does so, and the CLI ends with one line and
exit code 143 (128 + SIGTERM), as a shell reports a process that SIGTERM ended. The
handlers remember what they raised (`raise_if_interrupted`), since an exception raised
inside C code can come out as another error.

TF-free: the CLI catches these without importing TensorFlow.
"""

import contextlib
import errno
import os
import shutil
import signal
from typing import Iterator, Optional

# errno values of a full disk: no space left, or the user's quota used up.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM


class MachineFault(OSError):
  """A fault of the machine, not of the cell (a full disk): stores no failed row; exit 1."""


class Terminated(KeyboardInterrupt):
  """SIGTERM: handled like Ctrl-C, reported with its own line and exit code."""


def is_disk_full(error: BaseException) -> bool:
  return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full(error: OSError, *, path: str, writing: str, to_free: str) -> MachineFault:
  """A `MachineFault` for a full disk, naming the path, the free space and what to free.

  Args:
    error: the OSError (ENOSPC or EDQUOT) the write raised.
    path: the directory being written.
    writing: what was being written, e.g. "the feature cache entry of resnet_50/dtd/train".
    to_free: what the user can remove or move to make room.
  """
  try:
    free = f"{shutil.disk_usage(path).free / 2**20:,.0f} MiB free there"
  except OSError:
    free = "free space unknown"
  return MachineFault(
      error.errno, f"disk full ({os.strerror(error.errno)}) writing {writing} in {path} "
      f"({free}); nothing half-written is kept. Free space there ({to_free}) or point "
      f"--workdir at a larger disk, then rerun the same command to resume")


def describe_disk_full(error: OSError) -> str:
  """One line for a full disk that no `disk_full` named (the file, if the error has it)."""
  where = f" writing {error.filename}" if error.filename else ""
  return (f"disk full ({os.strerror(error.errno)}){where}. Free space on that disk, then "
          f"rerun the same command to resume")


# The interrupt a signal handler raised, kept until the CLI has reported it. Python runs a
# handler between bytecodes, which includes inside a C function that checks for signals
# (TensorFlow's do): the exception it raises can then surface as another one. Seen with a
# SIGTERM during a Keras training step: "SystemError: Objects/listobject.c:338: bad argument
# to internal function", which keras-tuner took for a failed trial before training the next
# one for its 100,000 steps. Code that catches `Exception` asks `raise_if_interrupted` first.
_pending: list[type[KeyboardInterrupt]] = []


def raise_terminated(signum, frame):
  """A SIGTERM handler: raises `Terminated` in the main thread (and remembers it)."""
  del signum, frame
  _pending[:] = [Terminated]
  raise Terminated()


def raise_interrupted(signum, frame):
  """A SIGINT handler: raises `KeyboardInterrupt`, as Python's own does (and remembers it)."""
  del signum, frame
  _pending[:] = [KeyboardInterrupt]
  raise KeyboardInterrupt()


def raise_if_interrupted(cause: Optional[BaseException] = None) -> None:
  """Raises the interrupt a signal handler of this module raised, if there was one, from
  `cause` (the error it may have turned into): call it where an `Exception` would be taken
  for a cell's or a trial's failure, and between steps of long work."""
  if _pending:
    raise _pending[0]() from cause


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
  """Within it, an `Exception` that a signal's interrupt turned into leaves as the interrupt
  (`raise_if_interrupted`), for callers whose caller takes an Exception for a failure."""
  try:
    yield
  except Exception as e:
    raise_if_interrupted(e)
    raise


def clear_interrupt() -> None:
  """Forgets the interrupt (once reported: a process may run more after it, e.g. tests)."""
  _pending.clear()
