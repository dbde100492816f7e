"""pytest glue: absl flags, and the files libraries write under HOME.

absl test helpers (create_tempdir, get_temp_dir) read absl flags, which `tf.test.main()`
parses under bazel; under pytest they are marked parsed with defaults.

Tests write only inside temporary directories, but some libraries write their own files
under HOME when imported or used. For the session, those point into one temporary directory
(removed at the end), which test subprocesses inherit through `fakes.subprocess_env`; a
user's own settings there (a keras.json with float16, say) do not reach the tests either.
Bazel needs none of this: it runs each test with HOME set to the test's TEST_TMPDIR.

TFDS's default data_dir (~/tensorflow_datasets) is deliberately not redirected: a test that
builds a dataset passes a data_dir of its own, and CI, which runs pytest with HOME set to an
empty directory, fails when anything appears there.

Two more pieces of glue:
  * `tf.test.TestCase` has a `test_session` method (a TF1 session helper, not a test); pytest
    collects it in every such class and reports it as skipped. It is deselected here.
  * The tests marked `shared_data.uses_shared` (real weights and photos in ../shared) are
    counted, and the terminal summary ends with one line saying how many passed, skipped and
    failed (`.ci/run` shows it), so a run that skipped them says so.
"""

import os
import shutil
import tempfile

from absl import flags
import pytest

from tests import shared_data

# Environment variable -> the subdirectory of the session's directory it names.
LIBRARY_HOMES = {
    "KERAS_HOME": "keras",  # keras.json, written on `import keras` (default ~/.keras).
    # Config and font cache, built on first import (default ~/.config and ~/.cache).
    "MPLCONFIGDIR": "matplotlib",
    # The notebook test's kernel: connection files, IPython profile and history.
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "IPYTHONDIR": "ipython",
}

_session = {}
_SHARED_PROPERTY = "uses_shared_data"
_shared_outcomes = {"passed": 0, "skipped": 0, "failed": 0}


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  root = tempfile.mkdtemp(prefix="tfhub_transfer_tests_home.")
  _session.update(root=root, saved={name: os.environ.get(name) for name in LIBRARY_HOMES})
  for name, subdir in LIBRARY_HOMES.items():
    os.environ[name] = os.path.join(root, subdir)


def pytest_unconfigure(config):
  del config
  if "root" not in _session:
    return
  for name, value in _session["saved"].items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
  shutil.rmtree(_session.pop("root"), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Deselects tf.test.TestCase's `test_session` helper; tags tests on ../shared."""
  ghosts = [item for item in items if item.name == "test_session"]
  if ghosts:
    config.hook.pytest_deselected(items=ghosts)
    items[:] = [item for item in items if item.name != "test_session"]
  for item in items:
    if any(getattr(owner, shared_data.MARK, False)
           for owner in (getattr(item, "cls", None), getattr(item, "obj", None))):
      # user_properties travel with each report, also from pytest-xdist's workers.
      item.user_properties.append((_SHARED_PROPERTY, True))


def pytest_runtest_logreport(report):
  if (_SHARED_PROPERTY, True) not in report.user_properties:
    return
  # One outcome per test: the call's, or the setup's when setup did not pass (a skip or an
  # error in setUpClass).
  if report.when == "call" or (report.when == "setup" and not report.passed):
    _shared_outcomes[report.outcome] += 1


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
  counts = ", ".join(f"{n} {outcome}" for outcome, n in _shared_outcomes.items())
  terminalreporter.write_line(f"tests on the real weights and photos (../shared): {counts}")
