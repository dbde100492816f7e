"""The real ImageNet weights and photos beside the checkout, in `<repo>/../shared/`.

`../shared/weights/` holds the Keras MobileNet v1 0.25 ImageNet no-top weights,
`../shared/data/` real photos (`cub_birds20/`: 20 bird species, train/ and test/; `pets37/`:
37 breeds, 10 original-size JPEGs each). They are never copied into the repository (the
photos' terms are the original datasets'); CI has the folder beside its clone.

A test that needs them is marked `@uses_shared` (on the test or its class) and asks for each
path with `path(...)`, which skips the test where the path is absent, except under `CI=true`,
where absence is a failure: CI never passes without having run them. conftest.py counts the
marked tests and prints how many passed, skipped and failed.

The repository root is the real path of this file's parent folder. Under pytest that is the
checkout; under Bazel this file is a link in the test's runfiles tree
(`$TEST_SRCDIR/$TEST_WORKSPACE/tests/`) to the checkout's file, so its real path leads to the
checkout too, and `../shared` beside it is read in place.
"""

import os
import unittest

MOBILENET_WEIGHTS = ("weights", "mobilenet_2_5_224_tf_no_top.h5")  # Keras MobileNet, alpha 0.25.
CUB_BIRDS20 = ("data", "cub_birds20")
PETS37 = ("data", "pets37")

# The attribute `uses_shared` sets, which conftest.py counts.
MARK = "uses_shared_data"


def repo_root() -> str:
  """The checkout this file belongs to (the real path, through Bazel's runfiles links)."""
  here = __file__
  if os.environ.get("TEST_SRCDIR") and os.environ.get("TEST_WORKSPACE"):
    here = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"], "tests",
                        os.path.basename(__file__))
  return os.path.dirname(os.path.dirname(os.path.realpath(here)))


def shared_root() -> str:
  """`<repo>/../shared`, normalised."""
  return os.path.normpath(os.path.join(repo_root(), os.pardir, "shared"))


def path(parts) -> str:
  """`<repo>/../shared/<parts...>`, which must exist.

  Args:
    parts: path components below shared/, e.g. `MOBILENET_WEIGHTS`.

  Returns:
    The path.

  Raises:
    unittest.SkipTest: it is absent and CI is not `true`.
    FileNotFoundError: it is absent under `CI=true`.
  """
  found = os.path.join(shared_root(), *parts)
  if os.path.exists(found):
    return found
  message = (f"{found} is absent: the real weights and photos go in ../shared/ beside the "
             f"checkout ({os.path.join(os.pardir, 'shared', *parts)} from {repo_root()})")
  if os.environ.get("CI", "").lower() == "true":
    raise FileNotFoundError(message + "; CI=true requires them.")
  raise unittest.SkipTest(message + ".")


def uses_shared(test):
  """Marks a test method or class as one that runs on ../shared (counted by conftest.py)."""
  setattr(test, MARK, True)
  return test
