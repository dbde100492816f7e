"""One end-to-end cell per regime at minimum size, on fakes; records, caches, resume, NaN."""

import dataclasses
import os
import shutil
import signal
import tempfile
from unittest import mock

import keras
import keras_tuner as kt
import numpy as np
from sklearn.linear_model import LogisticRegression
import tensorflow as tf

from tests import fakes
from tfhub_transfer import experiment
from tfhub_transfer import faults
from tfhub_transfer import features as features_lib
from tfhub_transfer import runners
from tfhub_transfer import training
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import store as results


def _tiny_config(tmp, regime, **overrides):
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=3)  # 72 features.
  fields = dict(model="hub:" + hub, dataset="digits", regime=regime, image_size=16,
                workdir=os.path.join(tmp, "work"), data_dir=fakes.digits_data_dir(),
                max_examples=60, batch_size=16,
                l2_grid_size=6, train_steps=2, learning_rates=(0.01,), weight_decays=(0.0,))
  fields.update(overrides)
  return ExperimentConfig(**fields)


class LogregCellTest(tf.test.TestCase):

  def test_logreg_record_and_cache(self):
    tmp = self.get_temp_dir()
    config = _tiny_config(tmp, "logreg")
    result = experiment.run_experiment(config)
    record = result.record
    self.assertEqual(record["status"], "ok")
    self.assertEqual(record["metric"], "top1")
    self.assertEqual(record["sizes"], {"train": 60, "val": 60, "trainval": 120, "test": 60})
    self.assertIn(record["hparams"]["l2"], np.logspace(-6, 5, 6).tolist())
    self.assertLen(record["search"]["val_metric"], 6)
    self.assertEqual(record["weights"], "imagenet")
    for phase in ("extract_s", "fit_s", "total_s"):
      self.assertGreater(record["timings"][phase], 0.0)
    self.assertEqual(record["versions"]["tensorflow"], tf.__version__)
    self.assertEqual(record["provenance"], {"device_kind": "CPU", "gpu_names": [], "tf32": False,
                                            "cuda_version": None, "cudnn_version": None})
    stored = results.ResultsStore.for_workdir(config.workdir).get(*config.cell)
    self.assertEqual(stored["test_metric"], record["test_metric"])

    # Whether L-BFGS converged at the chosen L2 (train-only fit) and at the refit.
    for fit in ("chosen", "refit"):
      self.assertIsInstance(record["convergence"][fit]["converged"], bool)
      self.assertGreaterEqual(record["convergence"][fit]["iterations"], 0)
    self.assertEqual(record["convergence"]["tol"], 1e-4)

    # The per-example test predictions: stored beside the store, and they give the metric.
    store = results.ResultsStore.for_workdir(config.workdir)
    self.assertTrue(record["predictions"]["path"].startswith("predictions/"))
    predictions = store.load_predictions(record)
    self.assertLen(predictions, 60)
    self.assertEqual(record["predictions"]["examples"], 60)
    self.assertAlmostEqual(float(np.mean(predictions.correct())), record["test_metric"])

    # The stored numbers against scikit-learn on the cached features: same L2 (C = 1/l2),
    # refit on train+val, scored once on test.
    cache = {s: features_lib.load_cached(*os.path.split(record["feature_cache"][s]["path"]))
             for s in ("train", "val", "test")}
    x = np.concatenate([cache["train"].features, cache["val"].features])
    y = np.concatenate([cache["train"].labels, cache["val"].labels])
    sk = LogisticRegression(C=1.0 / record["hparams"]["l2"], max_iter=5000, tol=1e-6)
    sk.fit(x, y)
    sk_test = float(np.mean(sk.predict(cache["test"].features) == cache["test"].labels))
    self.assertNear(record["test_metric"], sk_test, 0.034)  # At most 2 of 60 test images.

    # A second run reuses every cache entry, never builds the backbone, gives the same answer.
    with mock.patch.object(runners.CellContext, "build_model",
                           side_effect=AssertionError("backbone built on a hit")):
      again = experiment.run_experiment(config)
    self.assertTrue(all(c["hit"] for c in again.record["feature_cache"].values()))
    self.assertEqual(again.test_metric, result.test_metric)
    # The rerun replaced the record: its predictions file replaced the first one's.
    folder = os.path.join(config.workdir, predictions_lib.PREDICTIONS_DIR)
    self.assertEqual(os.listdir(folder), [os.path.basename(again.record["predictions"]["path"])])
    self.assertTrue(store.delete(*config.cell))
    self.assertEmpty(os.listdir(folder))  # Removed with its record.

  def test_interrupted_extraction_leaves_no_entry(self):
    cache_dir = self.get_temp_dir() + "/cache"
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((8, 4, 4, 3), np.float32), np.arange(8))).batch(2)
    calls = []

    def failing_fn(images):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt  # As a Ctrl-C in the middle of extraction.
      return tf.reduce_mean(images, axis=[1, 2])

    with self.assertRaises(KeyboardInterrupt):
      features_lib.extract_features(failing_fn, data, cache_dir=cache_dir, key="k")
    self.assertIsNone(features_lib.load_cached(cache_dir, "k"))
    self.assertEmpty(os.listdir(cache_dir))
    done = features_lib.extract_features(lambda i: tf.reduce_mean(i, axis=[1, 2]), data,
                                         cache_dir=cache_dir, key="k")
    self.assertEqual(done.features.shape, (8, 3))
    self.assertAllEqual(done.labels, np.arange(8))

  def test_unknown_dataset_runs_nothing(self):
    with self.assertRaisesRegex(ValueError, "imagenet"):
      experiment.run_experiment(_tiny_config(self.get_temp_dir(), "logreg",
                                             dataset="imagenet"))


class TrainedCellTest(tf.test.TestCase):

  def test_nan_trial_is_recorded_not_fatal(self):
    tmp = self.get_temp_dir()
    config = _tiny_config(tmp, "finetune", learning_rates=(1e9,), train_steps=3)
    with self.assertRaisesRegex(experiment.ExperimentFailed, "Every hyperparameter trial"):
      experiment.run_experiment(config)
    store = results.ResultsStore.for_workdir(config.workdir)
    self.assertEqual(store.get(*config.cell)["status"], "failed")
    (trial,) = store.trials(*config.cell)
    self.assertEqual(trial["status"], "failed")
    self.assertRegex(trial["error"], "loss became (nan|inf)|non-finite logits")


class LowDataCellTest(tf.test.TestCase):
  """`examples_per_class`: every regime trains on the subset alone; validation and test whole."""

  def _config(self, regime, **overrides):
    return _tiny_config(self.get_temp_dir(), regime, examples_per_class=2, max_examples=0,
                        **overrides)

  def test_logreg_fits_the_subset_alone(self):
    record = experiment.run_experiment(self._config("logreg")).record
    self.assertEqual(record["status"], "ok")
    # digits: 2 of each of 10 classes; 288 held out for validation; 359 test images.
    self.assertEqual(record["sizes"], {"train": 20, "val": 288, "trainval": 20, "test": 359})
    subset = record["splits"]["subset"]
    self.assertEqual((subset["examples_per_class"], subset["seed"], subset["size"]), (2, 0, 20))
    self.assertEqual(record["protocol_settings"]["examples_per_class"], 2)
    self.assertEqual(record["timings"]["refit_s"], 0.0)
    # The stored test metric is that of the selected L2 fitted on the 20 images only
    # (scikit-learn, C = 1/l2), not refitted with the 288 validation images.
    cache = {s: features_lib.load_cached(*os.path.split(record["feature_cache"][s]["path"]))
             for s in ("train", "test")}
    self.assertLen(cache["train"].labels, 20)
    sk = LogisticRegression(C=1.0 / record["hparams"]["l2"], max_iter=5000, tol=1e-6)
    sk.fit(cache["train"].features, cache["train"].labels)
    sk_test = float(np.mean(sk.predict(cache["test"].features) == cache["test"].labels))
    self.assertNear(record["test_metric"], sk_test, 3 / 359)

  def test_finetune_and_scratch_train_on_the_subset(self):
    # Both on the tiny SavedModel: its own weights (finetune), a random init (scratch). A
    # Keras application's scratch cell runs end to end in the quickstart notebook's test.
    for regime in ("finetune", "scratch"):
      config = self._config(regime)
      record = experiment.run_experiment(config).record
      self.assertEqual(record["status"], "ok", regime)
      self.assertEqual(record["weights"], {"finetune": "imagenet", "scratch": "random"}[regime])
      self.assertEqual(record["sizes"]["train"], 20)
      self.assertEqual(record["sizes"]["trainval"], 20)
      self.assertIn("subset alone", record["splits"]["refit"])
      full = dataclasses.replace(config, examples_per_class=0)
      self.assertNotEqual(full.cell, config.cell)  # Its own row, tuner state, checkpoints.


class ResumableGridTest(tf.test.TestCase):
  """The grid oracle reloaded from its directory walks on through the grid as an
  uninterrupted one does (keras-tuner's own ends the search after the trials it had)."""

  def _oracle(self, directory):
    oracle = tuning.ResumableGridSearchOracle(objective=kt.Objective("val", "max"), seed=0)
    oracle._set_project_dir(directory, "search")  # pylint: disable=protected-access
    hp = kt.HyperParameters()
    hp.Choice("learning_rate", [0.1, 0.01, 0.001])
    hp.Choice("weight_decay", [0.0, 1e-4])
    oracle.hyperparameters = hp
    oracle.verbose = 0
    return oracle

  def _walk(self, oracle, trials):
    """The values of up to `trials` trials run to completion in turn; then the status of a
    trial that did not run, if any."""
    walk = []
    for _ in range(trials):
      trial = oracle.create_trial("tuner0")
      if trial.status != kt.engine.trial.TrialStatus.RUNNING:
        return walk + [trial.status]
      walk.append(tuple(trial.hyperparameters.values.values()))
      oracle.update_trial(trial.trial_id, {"val": 0.5})
      trial.status = kt.engine.trial.TrialStatus.COMPLETED
      oracle.end_trial(trial)
    return walk

  def test_a_reloaded_search_walks_the_rest_of_the_grid(self):
    whole = self._walk(self._oracle(self.create_tempdir().full_path), 7)
    grid = [(lr, wd) for lr in (0.1, 0.01, 0.001) for wd in (0.0, 1e-4)]
    self.assertEqual(whole, grid + [kt.engine.trial.TrialStatus.STOPPED])
    directory = self.create_tempdir().full_path
    first = self._oracle(directory)
    done = self._walk(first, 2)
    first.save()
    reloaded = self._oracle(directory)
    reloaded.reload()
    self.assertEqual(done + self._walk(reloaded, 5), whole)


class ResumeTest(tf.test.TestCase):

  def test_interrupted_search_resumes_at_the_trial_in_flight(self):
    config = _tiny_config(self.get_temp_dir(), "finetune", learning_rates=(0.01, 0.001))
    real_train, calls = training.train, []

    def train_then_interrupt(*args, **kwargs):
      calls.append(1)
      if len(calls) == 2:
        raise KeyboardInterrupt  # Ctrl-C (or a preempted host) as the second trial starts.
      return real_train(*args, **kwargs)

    with mock.patch.object(training, "train", train_then_interrupt), \
        self.assertRaises(KeyboardInterrupt):
      experiment.run_experiment(config)
    store = results.ResultsStore.for_workdir(config.workdir)
    first = {t["trial_id"]: t["stored_at"] for t in store.trials(*config.cell)}
    self.assertLen(first, 1)
    self.assertIsNone(store.get(*config.cell))

    calls.clear()
    with mock.patch.object(training, "train", lambda *a, **k: calls.append(1) or real_train(
        *a, **k)):
      record = experiment.run_experiment(config).record
    self.assertEqual(record["status"], "ok")
    self.assertLen(calls, 2)  # The trial in flight and the refit: the finished one not rerun.
    trials = store.trials(*config.cell)
    self.assertLen(trials, 2)  # Each grid point once.
    for t in trials:
      if t["trial_id"] in first:
        self.assertEqual(t["stored_at"], first[t["trial_id"]])
    self.assertLen({t["hparams"]["learning_rate"] for t in trials}, 2)

  def test_interrupted_training_resumes_where_it_stopped(self):
    backup = self.get_temp_dir() + "/backup"
    data = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(0).normal(size=(16, 4)).astype("float32"),
         np.arange(16) % 2)).batch(4).repeat()

    def build():
      keras.utils.set_random_seed(0)
      model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
      model.make_loss = lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
      training.compile_model(model, learning_rate=0.1, train_steps=6)
      return model

    class StopAfterFirstEpoch(keras.callbacks.Callback):

      def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
          raise KeyboardInterrupt

    setup = training.TrainSetup(train_steps=6)
    model = build()
    model.fit = _with_extra_callback(model.fit, StopAfterFirstEpoch())
    with self.assertRaises(KeyboardInterrupt):
      training.train(model, data, setup, backup_dir=backup, verbose=0)
    resumed = build()
    training.train(resumed, data, setup, backup_dir=backup, verbose=0)
    self.assertEqual(int(resumed.optimizer.iterations), 6)  # 6 steps in all, not 6 more.
    straight = build()
    training.train(straight, data, setup, backup_dir=self.get_temp_dir() + "/b2", verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
      self.assertAllClose(a, b, atol=1e-6)


def _signal_surfacing_as(error):
  """What CPython can make of a signal handler's exception raised inside a C function: the
  handler ran (and `faults` remembers its interrupt), the caller sees `error` instead (seen:
  a SIGTERM during a Keras step came out as SystemError "bad argument to internal
  function")."""
  try:
    faults.raise_terminated(signal.SIGTERM, None)
  except faults.Terminated:
    pass
  raise error


class LostInterruptTest(tf.test.TestCase):
  """A SIGTERM whose exception surfaced as another error, or as none, still ends the run: no
  failed trial, no failed cell, no training left running (a hang of 1 in 8 CLI runs before)."""

  def setUp(self):
    super().setUp()
    self.addCleanup(faults.clear_interrupt)

  def test_stops_the_search_instead_of_failing_the_trial_or_the_cell(self):
    config = _tiny_config(self.get_temp_dir(), "finetune", learning_rates=(0.01, 0.001))
    calls = []

    def train_then_signal(*args, **kwargs):
      calls.append(1)
      _signal_surfacing_as(SystemError("Objects/listobject.c:338: bad argument to internal "
                                       "function"))

    with mock.patch.object(training, "train", train_then_signal), \
        self.assertRaises(faults.Terminated) as raised:
      experiment.run_experiment(config)
    self.assertIsInstance(raised.exception.__cause__, SystemError)
    self.assertLen(calls, 1)  # keras-tuner did not go on to the second trial.
    store = results.ResultsStore.for_workdir(config.workdir)
    self.assertIsNone(store.get(*config.cell))  # No failed row: the cell is not to blame.
    self.assertEqual(store.trials(*config.cell), [])

  def test_training_stops_after_the_step_it_arrived_in(self):
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 4), np.float32), np.arange(4) % 2)).batch(2).repeat()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.make_loss = lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    training.compile_model(model, learning_rate=0.1, train_steps=100000)
    with self.assertRaises(ValueError):  # Swallowed, as an exception in __del__ would be.
      _signal_surfacing_as(ValueError("lost"))
    with self.assertRaises(faults.Terminated):
      training.train(model, data, training.TrainSetup(train_steps=100000),
                     backup_dir=self.get_temp_dir() + "/backup", verbose=0)
    self.assertEqual(int(model.optimizer.iterations), 1)


class FinetuneSearchTest(tf.test.TestCase):
  """One finetune search, run once for the class: its record and artifacts; and the same
  search interrupted in each trial and resumed, which scores as the uninterrupted one.

  Two trials of 16 steps, backed up every 8 steps (one Keras epoch): each trial in turn is
  interrupted at step 12, 4 steps after its first backup, and the search resumed. Had the
  resumed training read its input from batch 0 instead of its backup's step, the trials
  would score 0.100 and 0.200 here, where the uninterrupted ones score 0.233 and 0.150
  (measured; at 8 steps a trial interrupted alone scored alike either way).
  """

  SETTINGS = dict(learning_rates=(0.1, 0.03), train_steps=16)
  BACKUP_EVERY, INTERRUPT_AT = 8, 12

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
    cls.enterClassContext(mock.patch.object(training, "MAX_STEPS_PER_FIT_EPOCH",
                                            cls.BACKUP_EVERY))
    cls.straight_config = cls._config("straight")
    cls.straight = experiment.run_experiment(cls.straight_config)

  @classmethod
  def _config(cls, name):
    return _tiny_config(cls.tmp, "finetune", workdir=os.path.join(cls.tmp, name),
                        **cls.SETTINGS)

  def test_finetune_record_trials_and_artifacts(self):
    config, record = self.straight_config, self.straight.record
    self.assertEqual(record["status"], "ok")
    self.assertIn(record["hparams"]["learning_rate"], self.SETTINGS["learning_rates"])
    self.assertEqual(record["hparams"]["train_steps"], self.SETTINGS["train_steps"])
    self.assertBetween(record["test_metric"], 0.0, 1.0)
    trials = results.ResultsStore.for_workdir(config.workdir).trials(*config.cell)
    self.assertLen(trials, 2)
    self.assertEqual({t["status"] for t in trials}, {"ok"})
    best = max(trials, key=lambda t: t["val_metric"])
    self.assertNear(record["val_metric"], best["val_metric"], 1e-9)
    predictions = results.ResultsStore.for_workdir(config.workdir).load_predictions(record)
    self.assertLen(predictions, record["sizes"]["test"])
    self.assertAlmostEqual(float(np.mean(predictions.correct())), record["test_metric"])
    cell_dir = os.path.join(config.workdir, "runs", experiment.cell_id(config))
    self.assertNotEmpty(os.listdir(os.path.join(cell_dir, "tensorboard")))
    self.assertTrue(os.path.isdir(os.path.join(config.workdir, "tuner")))

  def test_search_resumed_in_each_trial_scores_as_an_uninterrupted_one(self):
    # One search interrupted three times in a row: in its first trial, then (resumed) in
    # its second, then resumed to the end.
    config = self._config("resumed")
    store = results.ResultsStore.for_workdir(config.workdir)
    real_train = training.train

    def run(interrupted_training=None):
      """Runs the search, the given training of this run interrupted at INTERRUPT_AT; returns
      the step each of its trainings started at (after any restore), and the record."""
      starts = []

      def train(model, *args, **kwargs):
        interrupt_at = self.INTERRUPT_AT if len(starts) == interrupted_training else -1
        # The class's fit, not the instance's: the cell's one model (cell_model) would
        # otherwise keep the earlier trainings' callbacks.
        model.fit = _with_extra_callback(type(model).fit.__get__(model),
                                         _RecordStart(starts), _InterruptAtStep(interrupt_at))
        return real_train(model, *args, **kwargs)

      with mock.patch.object(training, "train", train):
        try:
          return starts, experiment.run_experiment(config).record
        except KeyboardInterrupt:
          return starts, None

    starts, record = run(interrupted_training=0)
    self.assertEqual((starts, record), ([0], None))
    self.assertEmpty(store.trials(*config.cell))
    # The first trial resumed at its backup; the second started at step 0.
    starts, record = run(interrupted_training=1)
    self.assertEqual((starts, record), ([self.BACKUP_EVERY, 0], None))
    (first,) = store.trials(*config.cell)
    # The second trial resumed at its backup, the refit started at step 0; the finished
    # first trial was not run again.
    starts, record = run()
    self.assertEqual(starts, [self.BACKUP_EVERY, 0])
    self.assertIn(first, store.trials(*config.cell))

    # Every trial scores as in the uninterrupted search, so the same one is chosen and the
    # refit tests the same. The metrics are fractions of 60 images (steps of 1/60); on CPU
    # they are equal to the last bit, so the tolerance is 0.
    def by_hparams(cell_config):
      return {(t["hparams"]["learning_rate"], t["hparams"]["weight_decay"]): t["val_metric"]
              for t in results.ResultsStore.for_workdir(cell_config.workdir).trials(
                  *cell_config.cell)}
    self.assertLen(by_hparams(config), 2)
    self.assertEqual(by_hparams(config), by_hparams(self.straight_config))
    for field in ("hparams", "val_metric", "test_metric"):
      self.assertEqual(record[field], self.straight.record[field], field)


class _InterruptAtStep(keras.callbacks.Callback):
  """Ctrl-C (or a preempted host) once the optimizer has taken `step` steps."""

  def __init__(self, step):
    super().__init__()
    self.step = step

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations) == self.step:
      raise KeyboardInterrupt


class _RecordStart(keras.callbacks.Callback):
  """Records the optimizer's step count when training begins (after any restore)."""

  def __init__(self, starts):
    super().__init__()
    self.starts = starts

  def on_train_begin(self, logs=None):
    self.starts.append(int(self.model.optimizer.iterations))


def _with_extra_callback(fit, *extra):
  def fit_with(*args, callbacks=(), **kwargs):
    return fit(*args, callbacks=[*callbacks, *extra], **kwargs)
  return fit_with


if __name__ == "__main__":
  tf.test.main()
