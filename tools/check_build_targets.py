"""Checks that BUILD has exactly one runnable `py_test` per `tests/test_*.py`.

pytest finds test files by name; Bazel runs only the targets in BUILD. This check keeps the two
runners on the same suite: it fails when a test file has no target, when a target names no
file (or the wrong one), and when a test file would pass under Bazel without running anything
(no `tf.test.TestCase` methods, or no `tf.test.main()` / `absltest.main()` footer).

Usage (from the repository root; CI runs it before `bazel test`):

  python tools/check_build_targets.py [--root DIR]

Exit status 0 when BUILD and tests/ agree; 1 with one line per problem and the fix otherwise.
Only the standard library is used, so it runs before any dependency is installed.
"""

import argparse
import ast
import glob
import os
import sys

LIBRARY_LABEL = ":tfhub_transfer"
HELPERS_LABEL = ":test_helpers"
REQUIRED_ATTRS = ("size", "timeout")

PY_TEST_TEMPLATE = """\
py_test(
    name = "{name}",
    size = "medium",
    timeout = "moderate",
    srcs = ["tests/{name}.py"],
    main = "tests/{name}.py",
    deps = [
        "{helpers}",
        "{library}",
    ],
)"""


def make_py_test_stanza(name):
  """Returns the BUILD text of the `py_test` target for `tests/<name>.py`."""
  return PY_TEST_TEMPLATE.format(name=name, helpers=HELPERS_LABEL, library=LIBRARY_LABEL)


def _literal(node):
  """The value of a literal BUILD expression (string, list of strings), else None."""
  try:
    return ast.literal_eval(node)
  except ValueError:
    return None


def read_py_tests(build_path):
  """Parses the `py_test(...)` calls of a BUILD file.

  BUILD files are Starlark, whose syntax for calls, lists and strings is Python's, so the
  standard `ast` module reads them without evaluating anything.

  Args:
    build_path: path of the BUILD file.

  Returns:
    A list of dicts, one per `py_test` call in file order, mapping each keyword argument
    whose value is a literal to that value, plus `lineno`.
  """
  with open(build_path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=build_path)
  targets = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "py_test"):
      attrs = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
      attrs["lineno"] = node.lineno
      targets.append(attrs)
  return sorted(targets, key=lambda t: t["lineno"])


# Test runners that run the module's TestCase classes and honour Bazel's test environment
# (sharding, XML output, TEST_TMPDIR). STYLE.md asks for tf.test.main(); tests that need no
# TensorFlow may use absltest.main(), which tf.test.main() wraps.
MAIN_CALLS = ("tf.test.main", "absltest.main")


def _is_test_main_call(node):
  """True for the expression statement `tf.test.main()` or `absltest.main()`."""
  return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
          and ast.unparse(node.value.func) in MAIN_CALLS)


def check_test_file(path, root):
  """Returns the problems that would let `path` pass under Bazel without running a test."""
  rel = os.path.relpath(path, root)
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  problems = []
  has_test_method = any(
      isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
      and item.name.startswith("test")
      for node in tree.body if isinstance(node, ast.ClassDef)
      for item in node.body)
  if not has_test_method:
    problems.append(
        f"{rel}: no test method found; add a tf.test.TestCase subclass with test_* methods")
  last = tree.body[-1] if tree.body else None
  footer_ok = (isinstance(last, ast.If)
               and ast.unparse(last.test) in ("__name__ == '__main__'",
                                              "'__main__' == __name__")
               and len(last.body) == 1 and _is_test_main_call(last.body[0]))
  if not footer_ok:
    problems.append(
        f"{rel}: must end with\n    if __name__ == \"__main__\":\n      tf.test.main()\n"
        "  (or absltest.main()) so that its Bazel py_test runs the same tests as pytest")
  return problems


def check(root):
  """Compares BUILD's py_test targets with the test files under `root`.

  Args:
    root: the repository root (holds BUILD and tests/).

  Returns:
    A list of human-readable problems, each saying how to fix it; empty when all agree.
  """
  build_path = os.path.join(root, "BUILD")
  if not os.path.isfile(build_path):
    return [f"{build_path}: missing; it must declare one py_test per tests/test_*.py"]
  test_paths = sorted(glob.glob(os.path.join(root, "tests", "test_*.py")))
  test_names = [os.path.splitext(os.path.basename(p))[0] for p in test_paths]
  if not test_names:
    return [f"{os.path.join(root, 'tests')}: no test_*.py files; CI needs at least one test"]

  problems = []
  targets = read_py_tests(build_path)
  by_name = {}
  for target in targets:
    name = target.get("name")
    where = f"BUILD:{target['lineno']}: py_test {name!r}"
    if not isinstance(name, str):
      problems.append(f"BUILD:{target['lineno']}: py_test needs a literal name")
      continue
    if name in by_name:
      problems.append(f"{where}: declared twice; delete one of the two targets")
    by_name[name] = target
    if name not in test_names:
      problems.append(f"{where}: tests/{name}.py does not exist; delete the target or "
                      "rename it after its test file")
      continue
    expected_src = f"tests/{name}.py"
    if target.get("srcs") != [expected_src]:
      problems.append(f"{where}: srcs is {target.get('srcs')!r}, expected [{expected_src!r}]")
    if target.get("main") != expected_src:
      problems.append(f"{where}: main is {target.get('main')!r}, expected {expected_src!r}")
    for attr in REQUIRED_ATTRS:
      if not isinstance(target.get(attr), str):
        problems.append(f"{where}: set {attr} (e.g. {attr} = \"medium\"/\"moderate\")")
    deps = target.get("deps") or []
    for label in (HELPERS_LABEL, LIBRARY_LABEL):
      if label not in deps:
        problems.append(f"{where}: deps must include {label!r}")

  for name, path in zip(test_names, test_paths):
    if name not in by_name:
      problems.append(f"{os.path.relpath(path, root)}: no py_test target in BUILD; add\n"
                      + make_py_test_stanza(name))
    problems.extend(check_test_file(path, root))
  return problems


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), help="repository root holding BUILD and tests/")
  args = parser.parse_args(argv)
  problems = check(args.root)
  if problems:
    print(f"BUILD and tests/ disagree ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
      print(f"- {problem}", file=sys.stderr)
    return 1
  print(f"BUILD: one py_test for each of the "
        f"{len(read_py_tests(os.path.join(args.root, 'BUILD')))} tests/test_*.py files")
  return 0


if __name__ == "__main__":
  sys.exit(main())
