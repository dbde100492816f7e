"""The cell's one reused model trains as a freshly built one; one build and trace per cell."""

import os
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import fakes
from tfhub_transfer import cell_model
from tfhub_transfer import experiment
from tfhub_transfer import runners
from tfhub_transfer import training
from tfhub_transfer import transfer_head
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import store as results

_SPEC = transfer_head.backbones.get_backbone_spec(
    "keras:MobileNet", model_kwargs={"alpha": 0.25}, image_size=32)
_STEPS, _BATCH = 4, 8
_CellModel = cell_model.CellModel  # The real one, while a test patches the module's.


def _build(*, weight_decay, learning_rate):
  return transfer_head.build_transfer_head(
      _SPEC, regime="scratch", num_classes=3, weights="random", weight_decay=weight_decay,
      learning_rate=learning_rate, seed=3)


def _data(seed):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1.0, 1.0, (2 * _BATCH, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 2 * _BATCH)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(_BATCH, drop_remainder=True)


def _train(model):
  """Per-step losses (one step per Keras epoch), then the logits of a held-out set."""
  history = model.fit(_data(0).repeat(), epochs=_STEPS, steps_per_epoch=1, verbose=0)
  logits, _ = training.predict_scores(model, _data(1).unbatch().batch(5))  # 16 = 5+5+5+1.
  return history.history["loss"], logits


class CellModelTest(tf.test.TestCase):

  def test_reset_model_trains_as_a_fresh_build(self):
    cell = cell_model.CellModel(_build, strategy=tf.distribute.get_strategy(),
                                train_steps=_STEPS, batch_size=_BATCH)
    # A first trial trains the model (weights, batch-norm statistics, momenta, step count):
    # 64 examples are 8 steps an epoch (momentum 0.9), 1,600 are 200 (momentum 0.95).
    first = cell.get(weight_decay=0.0, learning_rate=0.1, num_train_examples=64)
    first_losses, first_logits = _train(first)
    traced = first.train_function
    second = cell.get(weight_decay=0.01, learning_rate=0.03, num_train_examples=1600)
    losses, logits = _train(second)
    self.assertIs(second, first)
    self.assertIs(second.train_function, traced)  # Not traced again.
    self.assertEqual(cell.builds, 1)

    # The independent path: a model built for the second trial alone, its batch-norm
    # momentum set as a float on each layer, as before models were reused.
    fresh = _build(weight_decay=0.01, learning_rate=0.03)
    training.compile_model(fresh, learning_rate=0.03, train_steps=_STEPS)
    momentum = 1.0 - 10.0 / (1600 / _BATCH)
    self.assertEqual(
        transfer_head.set_batch_norm_momentum(fresh.backbone, momentum), 27)
    fresh_losses, fresh_logits = _train(fresh)
    self.assertAllClose(losses, fresh_losses, rtol=1e-5, atol=0)
    self.assertAllClose(logits, fresh_logits, rtol=1e-4, atol=1e-5)
    for reused, built in zip(second.variables, fresh.variables):
      self.assertAllClose(reused, built, rtol=1e-4, atol=1e-5, msg=reused.path)
    self.assertEqual(int(second.optimizer.iterations), _STEPS)
    # The trials differ (else the reset would be untested): another rate, L2 and momentum.
    self.assertNotAllClose(first_losses[1:], losses[1:])
    self.assertNotAllClose(first_logits, logits)

  def test_inference_fn_traces_once_per_model(self):
    model = _build(weight_decay=0.0, learning_rate=0.1)
    images = _data(1).unbatch().batch(16).get_single_element()[0]
    for batch in (5, 16, 5):  # 16 images: batches of 5 end with a short one.
      logits, _ = training.predict_scores(model, _data(1).unbatch().batch(batch))
      self.assertAllClose(logits, model(images, training=False), rtol=1e-5, atol=1e-6)
    spec = _data(1).unbatch().batch(5).element_spec[0]
    self.assertEqual(model.inference_fn(spec).experimental_get_tracing_count(), 1)


class TrainedCellReuseTest(tf.test.TestCase):

  def test_cell_scores_as_with_a_fresh_model_per_training(self):
    # The whole cell (two trials, the refit, the test pass) with its one reused model, and
    # again with a model built anew for each training as before: the same trial scores,
    # choice and test metric.
    tmp = self.create_tempdir().full_path
    hub = os.path.join(tmp, "hub")
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=3)

    def config(workdir):
      return ExperimentConfig(
          model="hub:" + hub, dataset="digits", regime="finetune", image_size=16,
          workdir=os.path.join(tmp, workdir), data_dir=fakes.digits_data_dir(),
          max_examples=60, batch_size=16, train_steps=6, learning_rates=(0.1, 0.01),
          weight_decays=(0.001,))

    real_build = runners.CellContext.build_model
    builds = []

    def counted_build(ctx, **kwargs):
      builds.append(kwargs)
      return real_build(ctx, **kwargs)

    with mock.patch.object(runners.CellContext, "build_model", counted_build):
      reused = experiment.run_experiment(config("reused")).record
    self.assertLen(builds, 1)  # Two trials and the refit on one model.

    with mock.patch.object(cell_model, "CellModel", _ModelPerTraining):
      rebuilt = experiment.run_experiment(config("rebuilt")).record

    def trials(record_config):
      return {t["hparams"]["learning_rate"]: t["val_metric"]
              for t in results.ResultsStore.for_workdir(record_config.workdir).trials(
                  *record_config.cell)}
    self.assertLen(trials(config("reused")), 2)
    self.assertEqual(trials(config("reused")), trials(config("rebuilt")))
    for field in ("hparams", "val_metric", "test_metric"):
      self.assertEqual(reused[field], rebuilt[field], field)


class TrainingStreamTest(tf.test.TestCase):

  def test_trainings_from_batch_zero_share_one_stream_with_a_new_pipelines_batches(self):
    config = ExperimentConfig(model="keras:MobileNet", model_kwargs={"alpha": 0.25},
                              dataset="digits", regime="finetune", image_size=32,
                              workdir=self.create_tempdir().full_path,
                              data_dir=fakes.digits_data_dir(), max_examples=60,
                              batch_size=16)
    ctx = runners.load_cell(config)
    self.assertIsNotNone(ctx.cache_mode("train"))  # Cached: the case that is kept.
    kept = ctx.training_stream("train")(0)
    self.assertIs(ctx.training_stream("train")(0), kept)
    new = ctx.batches("train", training_mode=True, repeat=True)  # What a training made.
    for _ in range(2):  # A second training reads the kept stream (its cache) again.
      for (images, labels), (new_images, new_labels) in zip(kept.take(6), new.take(6)):
        self.assertAllEqual(images, new_images)
        self.assertAllEqual(labels, new_labels)
    resumed = ctx.training_stream("train")(2)
    self.assertIsNot(resumed, kept)
    self.assertAllEqual(next(iter(resumed))[0], list(new.skip(2).take(1))[0][0])
    ctx.training_stream("trainval")(0)
    self.assertIsNot(ctx.training_stream("train")(0), kept)  # One split kept at a time.


class _ModelPerTraining:
  """`CellModel`'s interface, building a new model for every training (as before reuse)."""

  def __init__(self, build_model_fn, **options):
    self.build_model_fn, self.options = build_model_fn, options

  def get(self, **kwargs):
    return _CellModel(self.build_model_fn, **self.options).get(**kwargs)


if __name__ == "__main__":
  tf.test.main()
