"""The test environment itself: files libraries write on their own land in temporary dirs.

Under pytest, tests/conftest.py points each library's directory into a session temporary
directory; Bazel runs every test with HOME set to its TEST_TMPDIR. Either way, nothing a
test imports writes to the user's HOME (CI also runs pytest with an empty HOME and fails
when anything is left there).
"""

import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from tests import fakes


def _temp_root():
  """Where a test may write: Bazel's per-test TEST_TMPDIR, or else the system temp dir."""
  return os.path.realpath(os.environ.get("TEST_TMPDIR") or tempfile.gettempdir())


class HermeticTest(tf.test.TestCase):

  def assertInTempDir(self, path, what):
    root = _temp_root()
    self.assertStartsWith(os.path.realpath(path), root + os.sep,
                          f"{what} is {path}, outside {root}: run the tests with pytest "
                          f"(tests/conftest.py) or bazel test, which keep it in a temp dir.")

  def test_keras_and_matplotlib_write_into_temp_dirs(self):
    import keras  # pylint: disable=g-import-not-at-top
    import matplotlib  # pylint: disable=g-import-not-at-top
    del keras
    # Keras's own rule (keras/src/backend/config.py): $KERAS_HOME, else ~/.keras.
    keras_home = os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras")
    self.assertTrue(os.path.exists(os.path.join(keras_home, "keras.json")),
                    f"import keras wrote no keras.json in {keras_home}")
    self.assertInTempDir(keras_home, "Keras's home")
    self.assertInTempDir(matplotlib.get_configdir(), "matplotlib's config dir")
    self.assertInTempDir(matplotlib.get_cachedir(), "matplotlib's cache dir")

  def test_subprocesses_inherit_it(self):
    done = subprocess.run(
        [sys.executable, "-c", "import os, matplotlib; "
         "print(os.environ.get('KERAS_HOME') or os.path.expanduser('~/.keras')); "
         "print(matplotlib.get_configdir())"],
        env=fakes.subprocess_env(), capture_output=True, text=True, timeout=120, check=True)
    keras_home, mpl_config = done.stdout.split()
    self.assertInTempDir(keras_home, "a child's Keras home")
    self.assertInTempDir(mpl_config, "a child's matplotlib config dir")


if __name__ == "__main__":
  tf.test.main()
