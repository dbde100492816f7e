"""Faults of the machine or of the process, not of a cell: a full disk, a SIGTERM.

A cell that fails (bad data, NaN, out of memory) is stored as a `failed` row and the sweep
goes on. A full disk is not the cell's doing, and the next cell would hit it too: it is raised
as `MachineFault`, stores no row, stops the run, and the CLI prints one line naming the path
and what to free (exit 1). SIGTERM, which SLURM and Kubernetes send before they kill, raises
`Terminated` in the main thread: a `KeyboardInterrupt`, so everything that cleans up after
Ctrl-C (partial cache entries, child processes) does so, and the CLI ends with one line and
exit code 143 (128 + SIGTERM), as a shell reports a process that SIGTERM ended.

TF-free: the CLI catches these without importing TensorFlow.
"""

import errno
import os
import shutil
import signal

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


def raise_terminated(signum, frame):
  """A SIGTERM handler: raises `Terminated` in the main thread."""
  del signum, frame
  raise Terminated()
