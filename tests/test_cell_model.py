"""The cell's one reused model trains as a freshly built one, within a cell and across cells
of one graph; one build per cell; a cell's evaluation batches are kept."""

import dataclasses
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import fakes
from tests import mirrored_check
from tfhub_transfer import cell_model
from tfhub_transfer import experiment
from tfhub_transfer import runners
from tfhub_transfer import training
from tfhub_transfer import transfer_head
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import pipeline
from tfhub_transfer.results import store as results


def _two_blocks(spec, *, weights, seed):
  """`_SPEC`'s network: `mirrored_check.tiny_backbone`, (conv -> batch norm -> ReLU) twice ->
  global average pool, its random init drawn from `seed`. It holds the kinds of state a Keras
  application holds (kernels; batch norm's weights, moving statistics and momentum) at a
  fraction of the cost to build and trace: the reset test's two models and three trainings
  took about 1.2 CPU-s here, 13.3 on MobileNet 0.25 at 32 px."""
  if weights != "random":
    raise ValueError(f"weights={weights!r}: {spec.name} has only a random init.")
  return mirrored_check.tiny_backbone(spec.image_size, seed=seed)


_SPEC = transfer_head.backbones.BackboneSpec(
    name="two_blocks", source=transfer_head.backbones.BUILT, image_size=16,
    preprocessing="unit", feature_dim=16, builder=f"{__name__}:_two_blocks")
_STEPS, _BATCH = 4, 8
_CellModel = cell_model.CellModel  # The real one, while a test patches the module's.


def _build(*, weight_decay, learning_rate, regime="scratch", weights="random", seed=3,
           num_classes=3):
  return transfer_head.build_transfer_head(
      _SPEC, regime=regime, num_classes=num_classes, weights=weights,
      weight_decay=weight_decay, learning_rate=learning_rate, seed=seed)


def _key(num_classes=3):
  return cell_model.TraceKey(
      backbone=_SPEC, network_dir="", num_classes=num_classes, multi_label=False,
      trains_backbone=True, precision="float32", jit_compile=False, train_steps=_STEPS,
      batch_size=_BATCH, strategy=tf.distribute.get_strategy())


# 1,600 examples at batch 8 are 200 steps an epoch: momentum 1 - 10 / 200.
_EXAMPLES, _MOMENTUM = 1600, 1.0 - 10.0 / (1600 / _BATCH)


def _fresh(*, weight_decay, learning_rate, **build_args):
  """A model built and compiled for one training alone, its batch-norm momentum for
  `_EXAMPLES` set as a float on each layer, as before models were reused."""
  model = _build(weight_decay=weight_decay, learning_rate=learning_rate, **build_args)
  _compile(model, learning_rate=learning_rate)
  transfer_head.set_batch_norm_momentum(model.backbone, _MOMENTUM)
  return model


def _compile(model, *, learning_rate):
  """Compiles a fresh model, its optimizer built before `fit`: a first step that creates the
  optimizer's variables is traced twice (about 3 of a MobileNet's 7 CPU-seconds)."""
  training.compile_model(model, learning_rate=learning_rate, train_steps=_STEPS)
  model.optimizer.build(model.trainable_variables)


def _data(seed, size=_SPEC.image_size):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1.0, 1.0, (2 * _BATCH, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 2 * _BATCH)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(_BATCH, drop_remainder=True)


def _train(model, size=_SPEC.image_size):
  """Per-step losses (one step per Keras epoch), then the logits of a held-out set."""
  history = model.fit(_data(0, size).repeat(), epochs=_STEPS, steps_per_epoch=1, verbose=0)
  logits, _ = training.predict_scores(model, _data(1, size).unbatch().batch(5))  # 5+5+5+1.
  return history.history["loss"], logits


class CellModelTest(tf.test.TestCase):

  def test_reset_model_trains_as_a_fresh_build(self):
    cell = cell_model.CellModel(_build, _key())
    # A first trial trains the model (weights, batch-norm statistics, momenta, step count):
    # 64 examples are 8 steps an epoch (momentum 0.9), 1,600 are 200 (momentum 0.95).
    first = cell.get(weight_decay=0.0, learning_rate=0.1, num_train_examples=64)
    first_losses, first_logits = _train(first)
    traced = first.train_function
    second = cell.get(weight_decay=0.01, learning_rate=0.03, num_train_examples=_EXAMPLES)
    losses, logits = _train(second)
    self.assertIs(second, first)
    self.assertIs(second.train_function, traced)  # Not traced again.
    self.assertEqual(cell.builds, 1)

    # The independent path: a model built for the second trial alone, its batch-norm
    # momentum set as a float on each layer, as before models were reused.
    fresh = _fresh(weight_decay=0.01, learning_rate=0.03)
    self.assertEqual(
        transfer_head.set_batch_norm_momentum(fresh.backbone, _MOMENTUM), 2)
    fresh_losses, fresh_logits = _train(fresh)
    self.assertAllClose(losses, fresh_losses, rtol=1e-5, atol=0)
    self.assertAllClose(logits, fresh_logits, rtol=1e-4, atol=1e-5)
    for reused, built in zip(second.variables, fresh.variables):
      self.assertAllClose(reused, built, rtol=1e-4, atol=1e-5, msg=reused.path)
    self.assertEqual(int(second.optimizer.iterations), _STEPS)
    # The trials differ (else the reset would be untested): another rate, L2 and momentum.
    self.assertNotAllClose(first_losses[1:], losses[1:])
    self.assertNotAllClose(first_logits, logits)

  def _hub_cells(self):
    """(cell's build args -> a model builder, key) for a tiny TF Hub module at 16 px: the
    module's own weights (`imagenet`, finetune) or a random init (scratch)."""
    hub = fakes.make_tiny_savedmodel(os.path.join(self.create_tempdir().full_path, "hub"),
                                     feature_dim=8, grid=3)
    spec = transfer_head.backbones.get_backbone_spec("hub:" + hub, image_size=16)

    def builder(regime="scratch", weights="random", seed=3, num_classes=3):
      def build(*, weight_decay, learning_rate):
        return transfer_head.build_transfer_head(
            spec, regime=regime, num_classes=num_classes, weights=weights,
            weight_decay=weight_decay, learning_rate=learning_rate, seed=seed)
      return build
    return builder, dataclasses.replace(_key(), backbone=spec)

  def test_next_cell_of_the_same_graph_trains_as_a_fresh_build_on_the_kept_model(self):
    # Three cells of one graph in a row on one kept model: scratch (random init, seed 3),
    # finetune after scratch (the module's weights), scratch after finetune (seed 5). The
    # second and third train as a model built for each alone: same losses, logits, and
    # model and optimizer variables.
    builder, key = self._hub_cells()
    kept = cell_model.KeptModel()
    cells = [dict(regime="scratch", weights="random", seed=3),
             dict(regime="finetune", weights="imagenet", seed=3),
             dict(regime="scratch", weights="random", seed=5)]
    runs = []
    for index, build_args in enumerate(cells):
      cell = cell_model.CellModel(builder(**build_args), key, kept=kept)
      model = cell.get(weight_decay=0.01, learning_rate=0.03, num_train_examples=_EXAMPLES)
      self.assertEqual((cell.builds, cell.reused), (1, index > 0))
      losses, logits = _train(model, size=16)
      runs.append((model, model.train_function, losses))
      if not index:
        continue
      self.assertIs(model, runs[0][0])
      self.assertIs(model.train_function, runs[0][1])  # Traced by the first cell only.
      fresh = builder(**build_args)(weight_decay=0.01, learning_rate=0.03)
      _compile(fresh, learning_rate=0.03)
      fresh_losses, fresh_logits = _train(fresh, size=16)
      self.assertAllClose(losses, fresh_losses, rtol=1e-5, atol=0, msg=str(build_args))
      self.assertAllClose(logits, fresh_logits, rtol=1e-4, atol=1e-5)
      for reused, built in zip(model.variables + model.optimizer.variables,
                               fresh.variables + fresh.optimizer.variables):
        self.assertAllClose(reused, built, rtol=1e-4, atol=1e-5, msg=reused.path)
    self.assertEqual(kept.reuses, 2)
    # The cells differ (else the reset would be untested): other initial weights.
    self.assertNotAllClose(runs[0][2], runs[1][2])
    self.assertNotAllClose(runs[0][2], runs[2][2])

  def test_cell_of_another_graph_builds_its_own_model_and_replaces_the_kept_one(self):
    builder, key = self._hub_cells()
    kept = cell_model.KeptModel()

    kept_at_build = []

    def cell_with(num_classes):
      build = builder(num_classes=num_classes)

      def build_noting_the_kept_model(**kwargs):
        kept_at_build.append(kept.key and kept.key.num_classes)
        return build(**kwargs)
      return cell_model.CellModel(build_noting_the_kept_model,
                                  dataclasses.replace(key, num_classes=num_classes), kept=kept)

    three = cell_with(3).get(weight_decay=0.0, learning_rate=0.1, num_train_examples=64)
    four_cell = cell_with(4)
    four = four_cell.get(weight_decay=0.0, learning_rate=0.1, num_train_examples=64)
    # The 3-class model was let go before the 4-class cell built its own: never two models.
    self.assertEqual(kept_at_build, [None, None])
    self.assertEqual(kept.key.num_classes, 4)
    self.assertFalse(four_cell.reused)
    self.assertIsNot(four, three)
    self.assertEqual(four.head.units, 4)
    again = cell_with(3)  # The 3-class model is no longer kept: one model at most.
    self.assertIsNot(again.get(weight_decay=0.0, learning_rate=0.1, num_train_examples=64),
                     three)
    self.assertFalse(again.reused)
    self.assertEqual(kept.reuses, 0)
    # Every field of the key tells graphs apart (a strategy by identity).
    key = _key()
    for field, other in (("num_classes", 4), ("multi_label", True),
                         ("trains_backbone", False), ("precision", "mixed_bfloat16"),
                         ("jit_compile", True), ("train_steps", _STEPS + 1),
                         ("batch_size", _BATCH + 1), ("network_dir", "/a/saved_model"),
                         ("strategy", tf.distribute.OneDeviceStrategy("/cpu:0")),
                         ("backbone", dataclasses.replace(_SPEC, image_size=64))):
      self.assertNotEqual(dataclasses.replace(key, **{field: other}), key, field)
    self.assertEqual(_key(), key)

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

    kept = cell_model.KeptModel()
    with mock.patch.object(runners.CellContext, "build_model", counted_build), \
         mock.patch.object(cell_model, "KEPT_MODEL", kept):
      reused = experiment.run_experiment(config("reused")).record
      self.assertLen(builds, 1)  # Two trials and the refit on one model.
      # The same cell again in the process: its build gives the initial values, the kept
      # model (its trace) trains.
      again = experiment.run_experiment(config("again")).record
    self.assertLen(builds, 2)
    self.assertEqual(kept.reuses, 1)

    with mock.patch.object(cell_model, "CellModel", _ModelPerTraining):
      rebuilt = experiment.run_experiment(config("rebuilt")).record

    def trials(record_config):
      return {t["hparams"]["learning_rate"]: t["val_metric"]
              for t in results.ResultsStore.for_workdir(record_config.workdir).trials(
                  *record_config.cell)}
    self.assertLen(trials(config("reused")), 2)
    self.assertEqual(trials(config("reused")), trials(config("rebuilt")))
    self.assertEqual(trials(config("again")), trials(config("rebuilt")))
    for field in ("hparams", "val_metric", "test_metric"):
      self.assertEqual(reused[field], rebuilt[field], field)
      self.assertEqual(again[field], rebuilt[field], field)


class TrainingStreamTest(tf.test.TestCase):

  def test_trainings_from_batch_zero_share_one_stream_with_a_new_pipelines_batches(self):
    config = _digits_config(self.create_tempdir().full_path)
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


def _digits_config(workdir, **overrides):
  """A finetune cell of 60 digits at 32 px on MobileNet 0.25 (its data built once)."""
  fields = dict(model="keras:MobileNet", model_kwargs={"alpha": 0.25}, dataset="digits",
                regime="finetune", image_size=32, workdir=workdir,
                data_dir=fakes.digits_data_dir(), max_examples=60, batch_size=16)
  return ExperimentConfig(**{**fields, **overrides})


class SplitBytesTest(tf.test.TestCase):

  def test_cells_of_one_split_measure_its_bytes_once_per_process(self):
    def config(**overrides):
      return _digits_config(self.create_tempdir().full_path, **overrides)
    measured, measure_bytes = [], pipeline.measure_bytes

    def measure(ds):
      measured.append(ds)
      return measure_bytes(ds)
    with mock.patch.dict(runners._SPLIT_BYTES, clear=True), \
        mock.patch.object(runners.pipeline, "measure_bytes", side_effect=measure):
      modes = [runners.load_cell(config(**overrides)).cache_mode("train")
               for overrides in ({}, {"regime": "scratch"}, {"seed": 0}, {"max_examples": 40})]
    # finetune, scratch and the same split again: one pass; 40 examples are another split.
    self.assertLen(measured, 2)
    self.assertEqual(modes, [pipeline.CACHE_DECODED] * 4)


class EvaluationBatchesTest(tf.test.TestCase):

  def _cell(self, reads):
    """The digits cell, its validation images counted as they are read."""
    config = _digits_config(self.create_tempdir().full_path)
    ctx = runners.load_cell(config)

    def count(example):
      tf.py_function(lambda: reads.append(1), [], [])
      return example
    return dataclasses.replace(ctx, splits=dataclasses.replace(
        ctx.splits, val=ctx.splits.val.map(count)))

  def test_passes_after_the_first_read_the_kept_batches(self):
    reads = []
    ctx = self._cell(reads)
    size = ctx.splits.sizes["val"]
    # 60 float32 images of 32 x 32 x 3 are 720 KiB: within the 1 GiB bound.
    self.assertTrue(pipeline.fits_evaluation_cache(num_examples=size, image_size=32))
    self.assertFalse(pipeline.fits_evaluation_cache(num_examples=2**30 // (32 * 32 * 12) + 1,
                                                    image_size=32))
    kept = ctx.evaluation_batches("val")
    self.assertIs(ctx.evaluation_batches("val"), kept)
    expected = list(ctx.batches("val"))  # A new pipeline's batches, as each pass read them.
    del reads[:]
    for _ in range(3):
      batches = list(kept)
      self.assertLen(batches, len(expected))
      for (images, labels), (new_images, new_labels) in zip(batches, expected):
        self.assertAllEqual(images, new_images)
        self.assertAllEqual(labels, new_labels)
    self.assertLen(reads, size)  # Read (and decoded) by the first pass only.

  def test_a_split_too_large_is_read_every_pass(self):
    reads = []
    ctx = self._cell(reads)
    with mock.patch.object(pipeline, "DECODED_CACHE_MAX_BYTES", 1000):
      batches = ctx.evaluation_batches("val")
    for _ in range(2):
      self.assertLen(list(batches), ctx.num_batches("val"))
    self.assertLen(reads, 2 * ctx.splits.sizes["val"])


class _ModelPerTraining:
  """`CellModel`'s interface, building a new model for every training (as before reuse)."""

  def __init__(self, build_model_fn, key, kept=None):
    del kept  # Nothing kept across cells either.
    self.build_model_fn, self.key = build_model_fn, key

  def get(self, **kwargs):
    return _CellModel(self.build_model_fn, self.key).get(**kwargs)


if __name__ == "__main__":
  tf.test.main()
