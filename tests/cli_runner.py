"""The CLI in this test process: the parse step and `cli.main`, with output captured.

For flag checks, plans and refusals, which need no process of their own (a subprocess
imports TensorFlow again: seconds of CPU each). A test file of its own would not be in
another test's Bazel runfiles; this module is (BUILD's test_helpers).
"""

import contextlib
import io
import re

from absl.testing import flagsaver

from tfhub_transfer import cli

# absl's log prefix: severity, MMDD, time, thread id, file:line].
_ABSL_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ ]+:\d+\] ")


def run_in_process(*args):
  """The CLI in this process, up to the first cell: parses `args` and runs `cli.main`.

  For checks that refuse a value before any cell runs (a cell that did run would store its
  row, which the caller can look for). Flags are restored afterwards.

  Returns:
    (exit code, the lines printed to stderr).
  """
  code, _, errors = run_in_process_with_stdout(*args)
  return code, errors


def run_in_process_with_stdout(*args):
  """`run_in_process`, also returning what was printed to stdout.

  absl log records (`I1205 10:29:22.469274 ... cli.py:460] ...`) are left out of the stderr
  lines: under `tf.test.main()` (Bazel) absl's handler writes them to sys.stderr, under
  pytest it does not; the tool's own lines are printed, never logged.

  Returns:
    (exit code, stdout text, the lines printed to stderr).
  """
  stdout, stderr = io.StringIO(), io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stderr(stderr), \
      contextlib.redirect_stdout(stdout):
    try:
      argv = cli._parse_flags(["tfhub_transfer", *args])  # pylint: disable=protected-access
      code = cli.main(argv)
    except SystemExit as e:
      code = e.code
  printed = [line for line in stderr.getvalue().splitlines() if not _ABSL_LOG_LINE.match(line)]
  return code, stdout.getvalue(), printed
