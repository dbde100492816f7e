"""Files the results live in: what a storage fault means, and writes that cannot half-happen.

`StoreError` is the one error of a results store or report that cannot be read or written;
`explain` turns an sqlite3 or OS error into one, naming the file, what is wrong and what to do
(the CLI prints it as one line). `atomic_open` writes a file beside its old version and renames
it over it when complete. `connect_read_only` opens a SQLite file without ever writing it.
"""

import contextlib
import errno
import os
import sqlite3
import tempfile
from typing import Any, Iterator
import urllib.parse


class StoreError(RuntimeError):
  """A results store (or the report) cannot be read or written: the message names the file,
  what is wrong and what to do, in one line."""

  def __init__(self, path: str, problem: str, advice: str):
    super().__init__(f"{path}: {problem}. {advice}")
    self.path = path


def explain(path: str, error: BaseException, *, writing: bool) -> StoreError:
  """The StoreError for an sqlite3 or OS error met on the store file `path`.

  Args:
    path: the store file.
    error: what sqlite3 or the OS raised.
    writing: whether the store was being written (else read).
  """
  name = getattr(error, "sqlite_errorname", "") or ""
  code = getattr(error, "errno", None)
  text = str(error)
  if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "malformed" in text:
    return StoreError(
        path, f"damaged, not a readable SQLite database ({text})",
        f"Nothing was changed. Move it aside, then restore it from a backup or from the "
        f"last report's export: python -c \"from tfhub_transfer.results import store; "
        f"store.ResultsStore('{path}').import_json('<workdir>/report/results.json')\"")
  if name == "SQLITE_FULL" or code == errno.ENOSPC:
    return StoreError(
        path, f"the disk is full ({text})",
        "The write was rolled back and what was stored is intact. Free space on that disk "
        "and run the same command again: finished cells are skipped")
  folder = os.path.dirname(os.path.abspath(path))
  if name.startswith("SQLITE_READONLY") or code in (errno.EROFS, errno.EACCES, errno.EPERM) or (
      writing and name == "SQLITE_CANTOPEN" and os.path.isdir(folder) and (
          not os.access(folder, os.W_OK) or _read_only_mount(folder))):
    return _read_only(path, text)
  if name == "SQLITE_CANTOPEN" or isinstance(error, OSError):
    return StoreError(
        path, f"cannot be opened ({text})",
        f"Check that {folder} exists and is {'writable' if writing else 'readable'}")
  return StoreError(path, f"{'writing' if writing else 'reading'} failed ({text})",
                    "Nothing was written. Check the disk (dmesg, df) and run the same "
                    "command again")


def _read_only(path: str, why: str) -> StoreError:
  return StoreError(
      path, f"read-only ({why})",
      "Nothing was written. Make the file and its folder writable to run cells (or use "
      "another --workdir); --mode=report only reads and works on it as it is")


def check_writable(path: str) -> None:
  """Raises the read-only StoreError now if the SQLite file `path` (or its folder, where its
  journal goes) cannot be written, rather than when a result is ready to be stored."""
  folder = os.path.dirname(os.path.abspath(path))
  if _read_only_mount(path):
    raise _read_only(path, "read-only filesystem")
  for target, what in ((path, "the file"), (folder, "its folder")):
    if os.path.exists(target) and not os.access(target, os.W_OK):
      raise _read_only(path, f"{what} is not writable")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[Any]:
  """Opens a new temporary file beside `path` and renames it to `path` once written, so a
  full disk or a kill leaves the previous file, never a truncated one.

  The temporary file is created exclusively under a random name (`tempfile.mkstemp`), so a
  file or symlink planted in the folder is never written through.
  """
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                             prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with open(fd, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


def connect_read_only(path: str, timeout: float) -> sqlite3.Connection:
  """A read-only connection. A WAL file in a folder this process cannot write (an archive,
  a read-only mount) opens only as immutable: nothing can be writing it there."""
  uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
  conn = None
  try:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout)
    conn.execute("PRAGMA schema_version").fetchone()  # Opening is lazy: read something.
    return conn
  except sqlite3.OperationalError as e:
    if conn is not None:
      conn.close()
    if getattr(e, "sqlite_errorname", "") != "SQLITE_CANTOPEN" or not os.path.isfile(path):
      raise
    if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) and not _read_only_mount(
        path):
      raise
  return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout)


def _read_only_mount(path: str) -> bool:
  try:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
  except OSError:
    return False
