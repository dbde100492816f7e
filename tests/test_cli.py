"""The command line as a user runs it: a subprocess per invocation."""

import os
import subprocess
import sys

import tensorflow as tf

from tests import fakes
from tfhub_transfer import backbones
from tfhub_transfer.report import results
from tfhub_transfer.report import stores


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

  def test_helpfull_shows_flags_and_defaults(self):
    done = run_cli("--helpfull")  # absl exits 1 after printing help.
    for text in ("--model", "--regime", "--weights", "--parallel_trials", "default: 'auto'"):
      self.assertIn(text, done.stdout)

  def test_flagfiles_parse(self):
    for name in ("quickstart", "paper_logreg", "paper_finetune", "paper_scratch"):
      done = run_cli(f"--flagfile=flags/{name}.cfg", "--regime=nonsense")
      # The flagfile parsed (an unknown flag would fail before); the override is rejected.
      self.assertIn("Unknown --regime='nonsense'", done.stderr, name)

  def test_bad_values_are_one_line_at_parse_time_and_leave_no_row(self):
    workdir = self.create_tempdir().full_path
    store = results.ResultsStore.for_workdir(workdir, host="a")
    store.put({"model": "resnet_50", "dataset": "dtd", "regime": "logreg", "seed": 0,
               "status": "ok", "metric": "top1", "val_metric": 0.5, "test_metric": 0.5})
    cell = ["--model=resnet_50", "--dataset=dtd", "--regime=finetune", "--workdir=" + workdir]
    for bad, says in (("--image_size=-1", "-1 is not a non-negative integer"),
                      ("--batch_size=0", "0 is not a positive integer"),
                      ("--train_steps=-100", "-100 is not a non-negative integer"),
                      ("--max_trials=-1", "-1 is not a non-negative integer"),
                      ("--l2_grid_size=0", "0 is not a positive integer"),
                      ("--max_examples=-5", "-5 is not a non-negative integer"),
                      ("--seeds=0,-1", "'-1' is not an integer in [0, 2^31)"),
                      ("--learning_rates=0.1,0", "'0' is not a positive number"),
                      ("--weight_decays=-1e-4", "'-1e-4' is not a non-negative number"),
                      ("--shard=2/2", "is not 'i/n' with 0 <= i < n"),
                      ("--model_kwargs={alpha: 1}", "is not JSON"),
                      ("--weights=/no/such/weights.h5", "no such file or directory"),
                      ("--manual_dir=/no/such/dir", "no such directory"),
                      ("--parallel_trials=-2", "-2 is not a non-negative integer"),
                      ("--gpus_per_trial=0", "0 is not a positive integer")):
      done = run_cli(*cell, bad, timeout=120)
      self.assertEqual(done.returncode, 2, bad)
      (line,) = done.stderr.splitlines()  # One line, naming the flag; no usage text.
      self.assertStartsWith(line, f"tfhub_transfer: flag {bad.split('=')[0]}=")
      self.assertIn(says, line)
    # Nothing ran: the one stored row is all there is, in the one store file.
    self.assertEqual(results.store_paths(workdir), [store.path])
    self.assertLen(stores.read_workdir(workdir).records(), 1)

  def test_forget_removes_failed_rows_from_every_host(self):
    workdir = self.create_tempdir().full_path
    def row(host, seed, status, model="resnet_50"):
      results.ResultsStore.for_workdir(workdir, host=host).put(
          {"model": model, "dataset": "dtd", "regime": "logreg", "seed": seed,
           "protocol": f"p{seed}", "status": status, "metric": "top1",
           "error": None if status == "ok" else f"error {seed}",
           "val_metric": 0.5 if status == "ok" else None,
           "test_metric": 0.5 if status == "ok" else None})
    row("a", 0, "failed")
    row("b", 1, "failed")
    row("b", 2, "ok")
    row("a", 0, "failed", model="densenet_121")  # Not in the grid.
    done = run_cli("--mode=forget", "--model=resnet_50", "--dataset=dtd", "--regime=logreg",
                   "--seeds=0,1,2", "--workdir=" + workdir, timeout=120)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    self.assertEqual(done.stdout.splitlines(), [
        "forgot resnet_50 / dtd / logreg / seed 0 [protocol p0]: failed: error 0",
        "forgot resnet_50 / dtd / logreg / seed 1 [protocol p1]: failed: error 1",
        f"2 stored result(s) forgotten in {workdir} (failed ones only; --forget_ok for ok "
        f"ones)"])
    self.assertEqual([(r["model"], r["seed"]) for r in stores.read_workdir(workdir).records()],
                     [("densenet_121", 0), ("resnet_50", 2)])


if __name__ == "__main__":
  tf.test.main()
