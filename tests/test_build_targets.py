"""BUILD declares one runnable py_test per tests/test_*.py (tools/check_build_targets.py)."""

import os
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

# Under pytest this is the checkout; under Bazel it is the runfiles tree, which holds BUILD,
# the tool and every tests/test_*.py as data of this target.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "check_build_targets.py")

GOOD_TEST = textwrap.dedent("""\
    import tensorflow as tf


    class ATest(tf.test.TestCase):

      def test_one(self):
        self.assertEqual(1, 1)


    if __name__ == "__main__":
      tf.test.main()
    """)


def py_test_stanza(name, srcs=None):
  srcs = srcs or [f"tests/{name}.py"]
  return textwrap.dedent(f"""\
      py_test(
          name = "{name}",
          size = "small",
          timeout = "short",
          srcs = {srcs!r},
          main = "{srcs[0]}",
          deps = [":test_helpers", ":tfhub_transfer"],
      )
      """).replace("'", '"')


class CheckBuildTargetsTest(tf.test.TestCase):

  def run_tool(self, root):
    return subprocess.run([sys.executable, TOOL, "--root", root],
                          capture_output=True, text=True, check=False)

  def make_repo(self, build, tests):
    """Writes BUILD and tests/<name>.py files to a fresh directory and returns its path."""
    root = tempfile.mkdtemp(dir=self.get_temp_dir())
    with open(os.path.join(root, "BUILD"), "w") as f:
      f.write(build)
    os.mkdir(os.path.join(root, "tests"))
    for name, text in tests.items():
      with open(os.path.join(root, "tests", name), "w") as f:
        f.write(text)
    return root

  def test_repository_build_matches_its_tests(self):
    result = self.run_tool(ROOT)
    self.assertEqual(result.returncode, 0, msg=result.stderr)

  def test_matching_fixture_passes(self):
    root = self.make_repo(py_test_stanza("test_a"), {"test_a.py": GOOD_TEST})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 0, msg=result.stderr)

  def test_test_file_without_target_fails_with_the_target_to_add(self):
    root = self.make_repo(py_test_stanza("test_a"),
                          {"test_a.py": GOOD_TEST, "test_new.py": GOOD_TEST})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 1)
    self.assertIn("tests/test_new.py: no py_test target in BUILD", result.stderr)
    self.assertIn('main = "tests/test_new.py"', result.stderr)

  def test_target_without_test_file_fails(self):
    root = self.make_repo(py_test_stanza("test_a") + py_test_stanza("test_gone"),
                          {"test_a.py": GOOD_TEST})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 1)
    self.assertIn("tests/test_gone.py does not exist", result.stderr)

  def test_target_with_wrong_srcs_fails(self):
    root = self.make_repo(py_test_stanza("test_a", srcs=["tests/test_b.py"]),
                          {"test_a.py": GOOD_TEST, "test_b.py": GOOD_TEST})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 1)
    self.assertIn("srcs is ['tests/test_b.py']", result.stderr)
    self.assertIn("tests/test_b.py: no py_test target", result.stderr)

  def test_file_without_main_footer_fails(self):
    no_footer = GOOD_TEST.split("\n\nif __name__")[0] + "\n"
    root = self.make_repo(py_test_stanza("test_a"), {"test_a.py": no_footer})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 1)
    self.assertIn("tf.test.main()", result.stderr)

  def test_file_without_test_methods_fails(self):
    empty = "import tensorflow as tf\n\nif __name__ == '__main__':\n  tf.test.main()\n"
    root = self.make_repo(py_test_stanza("test_a"), {"test_a.py": empty})
    result = self.run_tool(root)
    self.assertEqual(result.returncode, 1)
    self.assertIn("no test method found", result.stderr)


if __name__ == "__main__":
  tf.test.main()
