"""`--mode=score` end to end on digits: the stored row, the feature cache shared with logreg
(no backbone built on a hit), and the CLI. Real ImageNet weights against random ones, on
real photos: tests/test_real_data.py."""

import dataclasses
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import cli_runner
from tests import fakes
import tfhub_transfer
from tfhub_transfer import experiment
from tfhub_transfer import features as features_lib
from tfhub_transfer import runners
from tfhub_transfer import scoring
from tfhub_transfer import transferability
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import store as results


def _tiny_config(tmp, **overrides):
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=3)  # 72 features.
  fields = dict(model="hub:" + hub, dataset="digits", regime="logreg", image_size=16,
                workdir=os.path.join(tmp, "work"), data_dir=fakes.digits_data_dir(),
                max_examples=60, batch_size=32, l2_grid_size=4)
  fields.update(overrides)
  return ExperimentConfig(**fields)


class ScoreCellTest(tf.test.TestCase):

  def test_row_store_and_the_cache_shared_with_logreg(self):
    config = _tiny_config(self.get_temp_dir())
    record = scoring.score_cell(config).record
    self.assertEqual(set(record["scores"]), set(transferability.ESTIMATORS))
    for value in record["scores"].values():
      self.assertTrue(np.isfinite(value))
    self.assertEqual(record["sizes"], {"examples": 120, "dim": 72, "classes_present": 10,
                                       "knn_queries": 120, "splits": {"train": 60, "val": 60}})
    for phase in ("extract_s", "stats_s", "logme_s", "hscore_s", "knn_s", "total_s"):
      self.assertGreater(record["timings"][phase], 0.0, phase)
    self.assertEqual(record["split"], "trainval")
    self.assertFalse(any(c["hit"] for c in record["feature_cache"].values()))
    store = results.ResultsStore.for_workdir(config.workdir)
    self.assertEqual(store.get_score(*scoring.score_key(config))["scores"], record["scores"])

    # What was scored is train + val, as the cache holds them (the test split is not read).
    cached = [features_lib.load_cached(*os.path.split(record["feature_cache"][s]["path"]))
              for s in ("train", "val")]
    trainval = transferability.LabelledFeatures(
        [c.features for c in cached], [c.labels for c in cached], num_classes=10,
        multi_label=False)
    self.assertEqual(transferability.score_features(trainval).values, record["scores"])

    # Scoring again builds no backbone: every entry is a cache hit; the scores are the same.
    with mock.patch.object(runners.CellContext, "build_model",
                           side_effect=AssertionError("backbone built on a hit")):
      again = scoring.score_cell(config).record
    self.assertTrue(all(c["hit"] for c in again["feature_cache"].values()))
    self.assertEqual(again["scores"], record["scores"])

    # A logreg run of the same cell reads the train and val entries scoring wrote.
    logreg = experiment.run_experiment(config).record
    self.assertEqual({s: c["hit"] for s, c in logreg["feature_cache"].items()},
                     {"train": True, "val": True, "test": False})
    self.assertEqual(logreg["feature_cache"]["train"]["path"],
                     record["feature_cache"]["train"]["path"])

  def test_grid_skips_stored_cells_and_other_regimes_are_refused(self):
    from tfhub_transfer import sweep  # pylint: disable=g-import-not-at-top
    config = _tiny_config(self.get_temp_dir(), max_examples=30)
    grid = sweep.Grid(models=(config.model,), datasets=("digits",), regimes=("logreg",))
    seen = []
    first = scoring.run_score_grid(config, grid, on_result=seen.append)
    second = scoring.run_score_grid(config, grid, on_result=seen.append)
    self.assertEqual((first.done, first.skipped, second.done, second.skipped), (1, 0, 0, 1))
    self.assertEqual(seen[0].record["scores"], seen[1].record["scores"])
    self.assertIn("logme=", seen[1].summary_line())
    with self.assertRaisesRegex(ValueError, "Drop --regime"):
      scoring.score_cell(_tiny_config(self.get_temp_dir(), regime="finetune"))
    # The Python API: the stored row read back (not scored again), as a DataFrame.
    frame = tfhub_transfer.score(config, grid)
    self.assertEqual(list(frame["model"]), [seen[0].record["model"]])
    for name, value in seen[0].record["scores"].items():
      self.assertEqual(frame[name][0], value, name)
    self.assertEqual(scoring.run_score_grid(config, grid).skipped, 1)  # Nothing new stored.
    with self.assertRaisesRegex(ValueError, "Drop --regime"):
      tfhub_transfer.score(config, dataclasses.replace(grid, regimes=("finetune",)))


class ScoreCliTest(tf.test.TestCase):
  """--mode=score through the parse step and cli.main, in this process."""

  def test_score_mode_prints_name_value(self):
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=4)
    args = ["--mode=score", f"--model=hub:{hub}", "--dataset=digits", "--image_size=16",
            "--max_examples=30", f"--data_dir={fakes.digits_data_dir()}",
            f"--workdir={tmp}/work"]
    code, out, errors = cli_runner.run_in_process_with_stdout(*args)
    self.assertEqual(code, 0, errors[-30:])
    self.assertRegex(out, r"/ digits \(seed 0\): logme=-?[0-9.]+ hscore=-?[0-9.]+ "
                          r"knn=[0-9.]+ \(60 x 4 trainval features")
    code, errors = cli_runner.run_in_process(*args, "--regime=finetune")
    self.assertEqual(code, 2)
    self.assertIn("--mode=score scores frozen features", "\n".join(errors))


if __name__ == "__main__":
  tf.test.main()
