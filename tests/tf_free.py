"""Which heavy libraries an import pulls in, asked of a fresh interpreter (TensorFlow-free: the
report-side test files import this, not `fakes`)."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "tensorflow_hub")


def heavy_modules_after(imports: str) -> list[str]:
  """The modules of `HEAVY` loaded once `imports` (Python statements) have run in a new
  interpreter on this checkout (this one may have TensorFlow loaded by other tests).

  Raises:
    AssertionError: the imports failed (with the child's stderr).
  """
  code = f"import sys\n{imports}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  if done.returncode:
    raise AssertionError(f"{imports!r} failed: {done.stderr[-2000:]}")
  return eval(done.stdout.strip())  # pylint: disable=eval-used  (a printed list of str)
