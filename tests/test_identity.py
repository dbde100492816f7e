"""A result is keyed by what was run: weights and folders by content, collision-free cell
folders, paths from records kept inside the workdir, damaged small caches healed."""

import ast
import inspect
import json
import os
import re
import shutil
import tempfile

from absl.testing import absltest
import keras
import numpy as np
from PIL import Image
import tensorflow as tf

from tests import fakes
from tests import report_figures
from tfhub_transfer import experiment
from tfhub_transfer import features
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import folder as folder_lib
from tfhub_transfer.report import document
from tfhub_transfer.results import merged
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.results import workdir as workdir_lib


def _mobilenet_weights(*paths):
  """No-top MobileNet 0.25 weights files at `paths`, each with other weights: the first
  from Keras' initialisation, each next one with every kernel moved by noise of its size
  (one model built for all of them)."""
  keras.utils.set_random_seed(1)
  model = keras.applications.MobileNet(weights=None, include_top=False, alpha=0.25,
                                       input_shape=(32, 32, 3))
  rng = np.random.default_rng(2)
  for i, path in enumerate(paths):
    if i:  # Kernels only: batch-norm variances stay positive.
      model.set_weights([w + rng.normal(0, w.std(), w.shape).astype(w.dtype) if w.ndim == 4
                         else w for w in model.get_weights()])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save_weights(path)
  return paths


def _image_folder(root, *, classes=2, per_class=10, seed=0):
  """A flat image folder: `per_class` 16x16 PNGs per class, each class its own colour."""
  rng = np.random.default_rng(seed)
  for c in range(classes):
    os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
    for i in range(per_class):
      pixels = np.clip(rng.normal(60 + 120 * c, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, f"class{c}", f"{i}.png"))
  return root


def _report_text(workdir, out_dir):
  """`--mode=report`'s files without its figures (these tests read its text; test_report
  checks the figures): drawing is most of a report's time."""
  with report_figures.not_drawn():
    return document.write_workdir_report(workdir, out_dir=out_dir)


class ContentIdentityTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    cls.hub = fakes.make_tiny_savedmodel(os.path.join(cls.tmp, "hub"), feature_dim=8, grid=2)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _base(self, workdir, **fields):
    values = dict(model="hub:" + self.hub, dataset="digits", regime="logreg", image_size=16,
                  workdir=workdir, data_dir=fakes.digits_data_dir(), max_examples=40,
                  batch_size=16, l2_grid_size=4, train_steps=2, learning_rates=(0.01,),
                  weight_decays=(0.0,))
    values.update(fields)
    return ExperimentConfig(**values)

  def test_two_weights_files_with_one_name_are_two_cells_and_one_file_at_two_paths_one(self):
    workdir = self.create_tempdir().full_path
    first, second = _mobilenet_weights(
        os.path.join(self.create_tempdir(), "run1", "best.weights.h5"),
        os.path.join(self.create_tempdir(), "run2", "best.weights.h5"))
    configs = [self._base(workdir, model="keras:MobileNet", model_kwargs={"alpha": 0.25},
                          image_size=32, weights=w) for w in (first, second)]
    self.assertEqual(configs[0].model_label, configs[1].model_label)  # Both "...@best...".
    self.assertNotEqual(configs[0].cell, configs[1].cell)
    summary = sweep.run_sweep(configs, store=store_lib.ResultsStore.for_workdir(workdir))
    self.assertEqual((summary.done, summary.skipped, summary.failed), (2, 0, 0))
    stored = merged.read_workdir(workdir).records()
    self.assertLen(stored, 2)
    # Each file's stored result is its own: its features were extracted from its own weights
    # (none read from the other's cache entries) and differ from the other's.
    caches = [merged.read_workdir(workdir).get(*c.cell)["feature_cache"] for c in configs]
    for cache in caches:
      self.assertEqual({split: entry["hit"] for split, entry in cache.items()},
                       {"train": False, "val": False, "test": False})
    self.assertEmpty({e["path"] for e in caches[0].values()}
                     & {e["path"] for e in caches[1].values()})
    features_dir = workdir_lib.Workdir(workdir).features
    test_features = [features.load_cached(features_dir, os.path.basename(c["test"]["path"]))
                     .features for c in caches]
    self.assertEqual(test_features[0].shape, test_features[1].shape)
    # Random MobileNet features are tiny (about 1e-16 to 1e-12): compared relative to their size.
    self.assertNotAllClose(test_features[0], test_features[1], rtol=0.1, atol=0)
    # The same file under another path and name is the same cell: nothing runs.
    copy = os.path.join(self.create_tempdir(), "elsewhere", "renamed.weights.h5")
    os.makedirs(os.path.dirname(copy))
    shutil.copy(first, copy)
    again = self._base(workdir, model="keras:MobileNet", model_kwargs={"alpha": 0.25},
                       image_size=32, weights=copy)
    self.assertEqual(again.cell, configs[0].cell)
    self.assertTrue(merged.read_workdir(workdir).has_ok(*again.cell))
    # The report shows both, each under a readable label made distinct by a short hash.
    paths = _report_text(workdir, self.create_tempdir().full_path)
    rows = [line for line in paths.markdown.splitlines()
            if line.startswith("| keras:MobileNet")]
    labels = {row.split(" | ")[0][2:] for row in rows}
    self.assertLen(labels, 2)
    for label in labels:
      self.assertRegex(label, r'^keras:MobileNet\{"alpha":0.25\}@best.weights.h5@32px#[0-9a-f]{8}$')
    for record in stored:
      self.assertIn(f"{100 * record.test_metric:.1f}", paths.markdown)

  def test_folders_differing_in_punctuation_run_their_own_trials(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "work")
    spaced = _image_folder(os.path.join(root, "data", "a b"), seed=1)
    underscored = _image_folder(os.path.join(root, "data", "a_b"), classes=3, seed=2)
    configs = [self._base(workdir, dataset=f"folder:{path}", regime="finetune", train_steps=1)
               for path in (spaced, underscored)]
    layout = workdir_lib.Workdir(workdir)
    self.assertNotEqual(layout.cell_dir(configs[0].cell), layout.cell_dir(configs[1].cell))
    for config in configs:
      experiment.run_experiment(config)
    stored = merged.read_workdir(workdir)
    for config in configs:
      self.assertLen(stored.trials(*config.cell), 1)  # Its own search, not the other's.
    records = {r.dataset_label: r for r in stored.records()}
    self.assertEqual(set(records), {f"folder:{spaced}", f"folder:{underscored}"})
    self.assertEqual(records[f"folder:{spaced}"].details["sizes"]["test"], 4)
    self.assertEqual(records[f"folder:{underscored}"].details["sizes"]["test"], 6)
    self.assertLen(os.listdir(layout.tuner), 2)

  def test_a_changed_folder_is_a_new_cell_and_its_old_result_is_superseded(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "work")
    data = _image_folder(os.path.join(root, "birds"), per_class=10)
    before = self._base(workdir, dataset=f"folder:{data}")
    old = experiment.run_experiment(before).record
    # The same folder by other spellings is the same cell.
    for spelling in (f"folder:{data}/", f"folder:{data}/./",
                     f"folder:{os.path.relpath(data)}"):
      self.assertEqual(self._base(workdir, dataset=spelling).cell, before.cell)
    _image_folder(data, per_class=15, seed=5)  # Five more images per class, and new pixels.
    after = self._base(workdir, dataset=f"folder:{data}")
    self.assertNotEqual(after.cell, before.cell)
    summary = sweep.run_sweep([after], store=store_lib.ResultsStore.for_workdir(workdir))
    self.assertEqual((summary.done, summary.skipped), (1, 0))
    new = merged.read_workdir(workdir).get(*after.cell)
    self.assertEqual(new.details["sizes"]["test"], 6)
    self.assertEqual(old.details["sizes"]["test"], 4)
    paths = _report_text(workdir, self.create_tempdir().full_path)
    self.assertIn("## Superseded results (1)", paths.markdown)
    superseded = paths.markdown.split("## Superseded results (1)")[1]
    self.assertRegex(superseded, re.escape(f"folder:{data}#") + r"[0-9a-f]{8}"
                     + re.escape(f" / logreg / seed 0: test {100 * old.test_metric:.2f}%"))
    self.assertIn("1 successful and 0 failed runs", paths.markdown)  # Only the new one.

  def test_a_damaged_folder_listing_is_moved_aside_and_rebuilt(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "work")
    data = _image_folder(os.path.join(root, "d"))
    config = self._base(workdir, dataset=f"folder:{data}")
    clean = experiment.run_experiment(config).record.test_metric
    (listing,) = os.listdir(workdir_lib.Workdir(workdir).folders)
    path = os.path.join(workdir_lib.Workdir(workdir).folders, listing)
    with open(path) as f:
      clean_listing = json.load(f)
    for garbage in ('{"format": 1, "train": [', '{"format": 1}', "[]"):
      with open(path, "w") as f:
        f.write(garbage)
      folder_lib._validated.cache_clear()  # A new process: the listing is read from disk.
      with self.assertLogs(level="WARNING") as logs:
        if garbage == "[]":  # One damage end to end: the run's result is the clean one's.
          store_lib.ResultsStore.for_workdir(workdir).delete(*config.cell)
          self.assertEqual(experiment.run_experiment(config).record.test_metric, clean)
        else:  # The others where the run reads the listing.
          folder_lib.scan_folder(folder_lib.describe_layout(data),
                             cache_dir=workdir_lib.Workdir(workdir).folders)
      self.assertTrue(any(f"Folder listing {path} is damaged" in line
                          for line in logs.output), logs.output)
      with open(path) as f:
        self.assertEqual(json.load(f), clean_listing)  # Rebuilt.


class PathsFromRecordsTest(tf.test.TestCase):

  def test_forget_deletes_nothing_outside_the_workdir_and_names_the_record(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "work")
    outside = os.path.join(root, "outside.txt")
    with open(outside, "w") as f:
      f.write("not yours")
    store = store_lib.ResultsStore.for_workdir(workdir)
    store.put({"model": "resnet_50", "dataset": "dtd", "regime": "logreg", "seed": 0,
               "protocol": "p", "status": "ok", "metric": "top1", "val_metric": 0.5,
               "test_metric": 0.5, "predictions": {"path": "../outside.txt"}})
    with self.assertLogs(level="WARNING") as logs:
      forgotten = merged.forget(workdir, models=["resnet_50"], datasets=["dtd"],
                                regimes=["logreg"], seeds=[0], include_ok=True)
    self.assertLen(forgotten, 1)
    self.assertTrue(os.path.exists(outside))
    self.assertTrue(any("Damaged record ('resnet_50', 'dtd', 'logreg', 0)" in line
                        and "leads outside the workdir" in line for line in logs.output))
    with self.assertRaises(workdir_lib.OutsideWorkdirError):
      workdir_lib.Workdir(workdir).resolve("/etc/passwd")

  def test_a_symlink_at_a_temporary_name_is_not_written_through(self):
    folder = self.create_tempdir().full_path
    victim = os.path.join(folder, "victim.txt")
    with open(victim, "w") as f:
      f.write("keep")
    target = os.path.join(folder, "report.md")
    # The names the previous code used, and a few guesses: none is opened.
    for name in (f".report.md.tmp-{os.getpid()}", ".report.md.tmp", "report.md.tmp"):
      os.symlink(victim, os.path.join(folder, name))
    with storage.atomic_open(target) as f:
      f.write("# report")
    with open(victim) as f:
      self.assertEqual(f.read(), "keep")
    with open(target) as f:
      self.assertEqual(f.read(), "# report")
    self.assertFalse(os.path.islink(target))


class LayeringTest(absltest.TestCase):

  def test_the_run_side_imports_nothing_from_the_report(self):
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "tfhub_transfer")
    offenders = []
    for folder, _, names in os.walk(package):
      for name in names:
        path = os.path.join(folder, name)
        relative = os.path.relpath(path, package)
        # The report reads results; the CLI dispatches --mode=report to it; the package's
        # API (__init__.py) exports write_report.
        if not name.endswith(".py") or relative.startswith(("report", "results")) or (
            relative in ("cli.py", "__init__.py")):
          continue
        with open(path) as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          modules = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
          names_used = [a.name for a in getattr(node, "names", [])]
          for module in modules:
            if module.startswith("tfhub_transfer.report") or (
                module == "tfhub_transfer" and "report" in names_used):
              offenders.append(f"{relative}: {module}")
            if module.startswith("tfhub_transfer.results") and any(
                n.startswith("_") for n in names_used):
              offenders.append(f"{relative}: private names of {module}")
    self.assertEqual(offenders, [])

  def test_both_readers_share_one_interface(self):
    methods = [n for n in vars(merged.ResultsReader) if not n.startswith("_")]
    self.assertIn("records", methods)
    for reader in (store_lib.ResultsStore, merged.WorkdirResults):
      for name in methods:
        ours, expected = getattr(reader, name), getattr(merged.ResultsReader, name)
        if isinstance(expected, property):
          self.assertIsInstance(ours, property, f"{reader.__name__}.{name}")
          continue
        self.assertEqual(list(inspect.signature(ours).parameters),
                         list(inspect.signature(expected).parameters),
                         f"{reader.__name__}.{name}")


if __name__ == "__main__":
  tf.test.main()
