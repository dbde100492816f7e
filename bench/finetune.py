"""Figure 4: fine-tuning steps through the project's path (`training.train` on the training
pipeline) against `model.fit` of the same model on an in-memory batch."""

import os

import numpy as np
import tensorflow as tf

from bench import data
from bench import harness
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import regimes
from tfhub_transfer import training
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn
from tfhub_transfer.transfer_head import build_transfer_head

NUM_CLASSES = 10


def figure_finetune(profile: Profile, workdir: str) -> harness.Figure:
  """Both sides run `train_steps` steps of the same compiled model, alternately."""
  spec = backbones.get_backbone_spec(profile.train_model,
                                     image_size=profile.train_image_size or None)
  batch, steps = profile.train_batch, profile.train_steps
  num_images = 4 * batch
  records = data.write_jpeg_tfrecord(os.path.join(workdir, "fig4.tfrecord"), num_images,
                                     num_classes=NUM_CLASSES, seed=3)
  strategy = training.make_strategy("auto")
  with strategy.scope():
    model = build_transfer_head(spec, regime="finetune", num_classes=NUM_CLASSES,
                                weights=regimes.RANDOM)
    training.batch_norm_setup(model, num_images, batch)
    # The schedule spans every step the figure runs, so the learning rate stays positive.
    training.compile_model(model, learning_rate=0.01,
                           train_steps=2 * steps * (profile.train_repetitions + 1))
  setup = training.TrainSetup(train_steps=steps,
                              log_dir=os.path.join(workdir, "fig4_tensorboard"))
  images = tf.random.uniform([batch, spec.image_size, spec.image_size, 3], -1.0, 1.0, seed=0)
  labels = tf.constant(np.arange(batch) % NUM_CLASSES, tf.int64)
  in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()

  def project_path():
    train_data = pipeline.make_pipeline(
        data.read_jpeg_tfrecord(records), image_size=spec.image_size,
        preprocess_fn=get_preprocess_fn(spec.preprocessing), batch_size=batch,
        training=True, seed=0, repeat=True, drop_remainder=True)
    training.train(model, train_data, setup, backup_dir=os.path.join(workdir, "fig4_backup"),
                   verbose=0)

  def plain_fit():
    model.fit(in_memory, epochs=1, steps_per_epoch=steps, verbose=0)

  train_s, fit_s = harness.interleave([project_path, plain_fit], profile.train_repetitions)
  return harness.Figure(
      key="4", title="fine-tuning step throughput: training.train / model.fit in memory",
      measured=harness.Measurement(
          f"training.train on make_pipeline(training=True, repeat=True), {steps} steps",
          "s", train_s),
      baseline=harness.Measurement(
          f"model.fit on one pre-made in-memory batch, repeated, {steps} steps, no callbacks",
          "s", fit_s),
      ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 0.90",
      setup=(f"TransferHead({profile.train_model}, random init) at {spec.image_size} px, "
             f"finetune regime, batch {batch}, SGD + Nesterov, cosine schedule, "
             f"on {', '.join(training.devices_of(strategy))}; both sides feed model.fit "
             f"from tf.data on the host, so on a GPU both copy each batch to the device "
             f"(prefetched there by the strategy's distributed dataset); the project's path "
             f"decodes and augments {num_images} synthetic JPEGs (random-resized crop + "
             f"flip) and runs its callbacks: BackupAndRestore, TerminateOnNaN, TensorBoard "
             f"(one backup per {steps}-step run here, one per 200 steps in real runs); "
             f"each run also starts its input pipeline and releases it once, which real "
             f"runs do once per thousands of steps"))
