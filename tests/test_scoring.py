"""`--mode=score` end to end on digits: the stored row, the feature cache shared with logreg
(no backbone built on a hit), the CLI, and real ImageNet weights against random ones."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import tfhub_transfer
from tests import fakes
from tfhub_transfer import experiment
from tfhub_transfer import features as features_lib
from tfhub_transfer import runners
from tfhub_transfer import scoring
from tfhub_transfer import transferability
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import store as results

# The real Keras MobileNet v1 (alpha 0.25) ImageNet no-top weights, never in the repository:
# in ../shared/weights/ next to the checkout, or the shared folder of a worktree under /work.
_WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
IMAGENET_WEIGHTS = next(
    (p for p in (os.path.join(os.path.dirname(fakes.REPO_ROOT), "shared", "weights",
                              _WEIGHTS_FILE),
                 os.path.join("/work/shared/weights", _WEIGHTS_FILE)) if os.path.exists(p)),
    _WEIGHTS_FILE)


def _tiny_config(tmp, **overrides):
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=3)  # 72 features.
  fields = dict(model="hub:" + hub, dataset="digits", regime="logreg", image_size=16,
                workdir=os.path.join(tmp, "work"), data_dir=os.path.join(tmp, "data"),
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
    real_build = runners.CellContext.build_model
    runners.CellContext.build_model = lambda *a, **k: self.fail("backbone built on a hit")
    try:
      again = scoring.score_cell(config).record
    finally:
      runners.CellContext.build_model = real_build
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

  def test_score_mode_prints_name_value(self):
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=4)
    args = [sys.executable, "-m", "tfhub_transfer.cli", "--mode=score", f"--model=hub:{hub}",
            "--dataset=digits", "--image_size=16", "--max_examples=30",
            f"--data_dir={tmp}/data", f"--workdir={tmp}/work"]
    done = subprocess.run(args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertRegex(done.stdout, r"/ digits \(seed 0\): logme=-?[0-9.]+ hscore=-?[0-9.]+ "
                                  r"knn=[0-9.]+ \(60 x 4 trainval features")
    refused = subprocess.run(args + ["--regime=finetune"], cwd=fakes.REPO_ROOT,
                             env=fakes.subprocess_env(), capture_output=True, text=True,
                             timeout=300, check=False)
    self.assertEqual(refused.returncode, 2)
    self.assertIn("--mode=score scores frozen features", refused.stderr)


class RealWeightsTest(tf.test.TestCase):

  def test_every_score_prefers_imagenet_weights_to_random_ones(self):
    if not os.path.exists(IMAGENET_WEIGHTS):
      self.skipTest(f"{IMAGENET_WEIGHTS} is absent (the real MobileNet v1 0.25 weights).")
    tmp = self.get_temp_dir()
    base = dict(model="keras:MobileNet", model_kwargs={"alpha": 0.25}, image_size=64,
                max_examples=400, dataset="digits", regime="logreg",
                workdir=os.path.join(tmp, "work"), data_dir=os.path.join(tmp, "data"))
    scores = {w: scoring.score_cell(ExperimentConfig(weights=w, **base)).record["scores"]
              for w in (IMAGENET_WEIGHTS, "random")}
    for name in transferability.ESTIMATORS:
      self.assertGreater(scores[IMAGENET_WEIGHTS][name], scores["random"][name],
                         (name, scores))


if __name__ == "__main__":
  tf.test.main()
