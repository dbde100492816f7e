"""`tfhub_transfer.load_results` and `load_scores`: the stores as pandas DataFrames; the
package's exports."""

import inspect
import math
import os
import subprocess
import sys

from absl.testing import absltest
import pandas as pd

from tests import fakes
import tfhub_transfer
from tfhub_transfer import frame
from tfhub_transfer.results import store as results


def _logreg_record():
  return {"model": "resnet_50", "dataset": "dtd", "regime": "logreg", "seed": 1,
          "protocol": "ab12", "status": "ok", "metric": "top1", "val_metric": 0.61,
          "test_metric": 0.625, "hparams": {"l2": 0.01},
          "timings": {"extract_s": 3.5, "fit_s": 1.25, "total_s": 5.0},
          "sizes": {"train": 80, "val": 20, "trainval": 100, "test": 40}, "weights": "imagenet",
          "devices": ["/device:GPU:0", "/device:GPU:1"], "host": "a",
          "created_at": "2026-01-01T00:00:00+00:00"}


def _failed_record():
  return {"model": "hub:/m", "dataset": "caltech101", "regime": "finetune", "seed": 0,
          "protocol": "cd34", "status": "failed", "error": "ValueError: out of memory",
          "val_metric": None, "test_metric": None, "hparams": {}, "timings": {"total_s": 2.0}}


class LoadResultsTest(absltest.TestCase):

  def test_one_row_per_cell_with_flattened_fields(self):
    workdir = self.create_tempdir().full_path
    store = results.ResultsStore.for_workdir(workdir)
    store.put_many([_logreg_record(), _failed_record()])
    df = tfhub_transfer.load_results(workdir)
    self.assertEqual(list(df.columns), [
        "model", "dataset", "regime", "seed", "protocol", "model_label", "dataset_label",
        "status", "metric", "val_metric",
        "test_metric", "hparams.l2", "timings.extract_s", "timings.fit_s", "timings.total_s",
        "sizes.test", "sizes.train", "sizes.trainval", "sizes.val", "weights", "devices",
        "host", "created_at", "error"])
    self.assertEqual(list(df["model"]), ["hub:/m", "resnet_50"])  # The store's key order.
    ok = df[df["status"] == "ok"].iloc[0]
    self.assertEqual((ok["dataset"], ok["regime"], ok["seed"], ok["protocol"]),
                     ("dtd", "logreg", 1, "ab12"))
    self.assertEqual((ok["val_metric"], ok["test_metric"], ok["hparams.l2"]), (0.61, 0.625, 0.01))
    self.assertEqual((ok["timings.extract_s"], ok["timings.total_s"], ok["sizes.trainval"]),
                     (3.5, 5.0, 100))
    self.assertEqual(ok["devices"], "/device:GPU:0, /device:GPU:1")
    failed = df[df["status"] == "failed"].iloc[0]
    self.assertTrue(math.isnan(failed["test_metric"]))
    self.assertTrue(math.isnan(failed["hparams.l2"]))
    self.assertEqual(failed["error"], "ValueError: out of memory")
    self.assertEqual(failed["timings.total_s"], 2.0)
    self.assertEqual(list(tfhub_transfer.load_results(workdir, status="ok")["model"]),
                     ["resnet_50"])

  def test_empty_store_missing_workdir_and_bad_status(self):
    workdir = self.create_tempdir().full_path
    df = tfhub_transfer.load_results(workdir)
    self.assertEqual(len(df), 0)
    self.assertEqual(list(df.columns),
                     list(frame.LEADING_COLUMNS) + list(frame.TRAILING_COLUMNS))
    with self.assertRaisesRegex(FileNotFoundError, "No workdir .*nope.*--workdir"):
      tfhub_transfer.load_results(os.path.join(workdir, "nope"))
    self.assertFalse(os.path.exists(os.path.join(workdir, "nope")))
    with self.assertRaisesRegex(ValueError, "status='done'; expected one of"):
      tfhub_transfer.load_results(workdir, status="done")

  def test_load_scores_one_row_per_scored_cell(self):
    workdir = self.create_tempdir().full_path
    store = results.ResultsStore.for_workdir(workdir)
    for seed, logme in ((1, 0.5), (0, None)):
      store.put_score({"model": "resnet_50", "dataset": "dtd", "seed": seed, "protocol": "s1",
                       "model_label": "resnet_50", "dataset_label": "dtd",
                       "scores": {"logme": logme, "knn": 0.25},
                       "sizes": {"examples": 100, "dim": 2048}, "timings": {"total_s": 4.0}})
    df = tfhub_transfer.load_scores(workdir)
    self.assertIsInstance(df, pd.DataFrame)
    self.assertEqual(list(df.columns), ["model", "dataset", "seed", "protocol", "model_label",
                                        "dataset_label", "logme", "knn", "examples", "dim",
                                        "total_s", "created_at"])
    self.assertEqual(list(df["seed"]), [0, 1])
    self.assertTrue(math.isnan(df["logme"][0]))  # The estimator refused: NaN.
    self.assertEqual((df["logme"][1], df["knn"][1], df["dim"][1]), (0.5, 0.25, 2048))
    empty = tfhub_transfer.load_scores(self.create_tempdir().full_path)
    self.assertEqual((len(empty), list(empty.columns)[:4]),
                     (0, ["model", "dataset", "seed", "protocol"]))
    with self.assertRaisesRegex(FileNotFoundError, "No workdir .*nope"):
      tfhub_transfer.load_scores(os.path.join(workdir, "nope"))

  def test_every_export_is_typed_and_documented(self):
    self.assertCountEqual(tfhub_transfer.__all__, [
        "ExperimentConfig", "Grid", "run_experiment", "run_grid", "score", "load_results",
        "load_scores", "write_report"])
    for name in tfhub_transfer.__all__:
      value = getattr(tfhub_transfer, name)
      self.assertIn("Args:" if inspect.isfunction(value) else "Attributes:",
                    inspect.getdoc(value), name)
      if inspect.isfunction(value):
        self.assertIn("return", inspect.get_annotations(value), name)

  def test_import_tfhub_transfer_loads_neither_pandas_nor_tensorflow(self):
    code = ("import sys, tfhub_transfer\n"
            "tfhub_transfer.ExperimentConfig, tfhub_transfer.Grid, tfhub_transfer.run_grid\n"
            "before = [m for m in ('pandas', 'tensorflow') if m in sys.modules]\n"
            "tfhub_transfer.load_results, tfhub_transfer.load_scores\n"
            "after = [m for m in ('pandas', 'tensorflow') if m in sys.modules]\n"
            "print(before, after)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=fakes.REPO_ROOT,
                          env=fakes.subprocess_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    self.assertEqual(done.stdout.strip(), "[] ['pandas']")


if __name__ == "__main__":
  absltest.main()
