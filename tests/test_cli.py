"""The command line as a user runs it: a subprocess per invocation."""

import subprocess
import sys

import tensorflow as tf

from tests import fakes
from tfhub_transfer import backbones


def run_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "tfhub_transfer.cli", *args],
                        cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)


class CliTest(tf.test.TestCase):

  def test_list_models_lists_the_zoo(self):
    done = run_cli("--list_models")
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    self.assertLen(lines, 1 + len(backbones.BACKBONES))
    for spec in backbones.BACKBONES.values():
      row = next(line for line in lines if line.startswith(spec.name + " "))
      self.assertIn(f"{spec.paper_top1:.2f}", row)
      self.assertIn(str(spec.image_size), row)
    self.assertIn("tfhub.dev/google/imagenet/inception_v2", done.stdout)

  def test_unknown_names_exit_nonzero_listing_choices(self):
    for flag, bad, listed in (("--model", "resnet", "resnet_50"),
                              ("--regime", "linear", "logreg, finetune, scratch"),
                              ("--dataset", "imagenet", "caltech101")):
      args = {"--model": "resnet_50", "--regime": "logreg", "--dataset": "dtd"}
      args[flag] = bad
      done = run_cli(*(f"{k}={v}" for k, v in args.items()), "--workdir=" + self.get_temp_dir())
      self.assertNotEqual(done.returncode, 0)
      self.assertIn(repr(bad), done.stderr)
      self.assertIn(listed, done.stderr)
      self.assertNotIn("Traceback", done.stderr)

  def test_study_dimensions_must_be_counts(self):
    for flag, value, message in (
        ("--examples_per_class", "2,-1", "--examples_per_class=2,-1: values must be >= 0."),
        ("--train_steps", "20,x", "--train_steps=20,x: invalid literal")):
      done = run_cli("--model=resnet_50", "--dataset=dtd", "--regime=finetune",
                     f"{flag}={value}", "--workdir=" + self.get_temp_dir())
      self.assertEqual(done.returncode, 2, done.stderr[-2000:])
      self.assertIn(message, done.stderr)
      self.assertNotIn("Traceback", done.stderr)

  def test_helpfull_shows_flags_and_defaults(self):
    done = run_cli("--helpfull")  # absl exits 1 after printing help.
    for text in ("--model", "--regime", "--weights", "--parallel_trials", "default: 'auto'"):
      self.assertIn(text, done.stdout)

  def test_flagfiles_parse(self):
    for name in ("quickstart", "paper_logreg", "paper_finetune", "paper_scratch",
                 "paper_convergence", "paper_low_data"):
      done = run_cli(f"--flagfile=flags/{name}.cfg", "--regime=nonsense")
      # The flagfile parsed (an unknown flag would fail before); the override is rejected.
      self.assertIn("Unknown --regime='nonsense'", done.stderr, name)


if __name__ == "__main__":
  tf.test.main()
