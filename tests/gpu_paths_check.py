"""On two logical CPU devices (standing in for two GPUs): `--jit_compile` with two replicas is
refused before any work, by the library and by the CLI; `mirrored` runs over the two
devices; the feature extractor runs one shape over both replicas, images or
(`resize_on_device`) windows; one training step on two
replicas against one device (`mirrored_check`). Prints JSON (tests/test_distributed.py).

Run as its own process (logical devices must be set before TensorFlow starts):
`python -m tests.gpu_paths_check WORKDIR`.
"""

import contextlib
import io
import json
import os
import sys

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from tests import dummy_data_images as dummy
from tests import fakes
from tests import mirrored_check
from tfhub_transfer.transfer_head import TransferHead  # Starts no device: safe before setup.


class _CountingHead(TransferHead):
  """Records the input shape of every trace of `features` (Python runs only when tracing)."""

  traced_shapes: list

  def features(self, images, training=False):
    self.traced_shapes.append(images.shape.as_list())
    return super().features(images, training=training)


def counting_head() -> _CountingHead:
  """A tiny random-init `TransferHead` on 8x8 images that counts its traces."""
  keras.utils.set_random_seed(0)
  backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                               keras.layers.BatchNormalization(),
                               keras.layers.GlobalAveragePooling2D()], name="tiny")
  model = _CountingHead(backbone, num_classes=3, regime="logreg")
  model.traced_shapes = []
  model(tf.zeros((1, 8, 8, 3)))
  model.traced_shapes.clear()
  return model


def main(argv):
  workdir = argv[1]
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  # pylint: disable=g-import-not-at-top
  from tfhub_transfer import cli
  from tfhub_transfer import experiment
  from tfhub_transfer import features
  from tfhub_transfer import training
  from tfhub_transfer.config import ExperimentConfig
  from tfhub_transfer.data import device_resample
  from tfhub_transfer.data import pipeline
  from tfhub_transfer.data import transforms
  # pylint: enable=g-import-not-at-top
  # One MirroredStrategy for every collective of this process (see `one_step_on_each`).
  strategy = training.make_strategy("mirrored")
  out = {"mirrored_replicas": strategy.num_replicas_in_sync,
         "step": mirrored_check.one_step_on_each("cpu", two=strategy),
         # The next cell's strategy: the same object (a kept model serves only its own).
         "same_strategy": training.make_strategy("mirrored") is strategy}
  try:
    training.make_strategy("mirrored", jit_compile=True)
  except ValueError as e:
    out["library_error"] = str(e)
  config = ExperimentConfig(model="mobilenet_v2", dataset="digits", regime="finetune",
                            workdir=os.path.join(workdir, "library"), strategy="mirrored",
                            jit_compile=True)
  try:
    experiment.run_experiment(config)
  except ValueError as e:
    out["experiment_error"] = str(e)
  out["experiment_wrote"] = os.path.exists(config.workdir)

  flags.FLAGS(["cli", "--model=mobilenet_v2", "--dataset=digits", "--regime=finetune",
               "--strategy=mirrored", "--jit_compile",
               "--workdir=" + os.path.join(workdir, "cli")])
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    out["cli_code"] = cli.main(["cli"])
  out["cli_stderr"] = stderr.getvalue()
  out["cli_wrote"] = os.path.exists(os.path.join(workdir, "cli"))

  # The feature extractor over both replicas: a split of 11 images in batches of 4.
  with strategy.scope():
    model = counting_head()
  feature_fn = features.make_feature_fn(model, strategy, batch_size=4)
  images = np.random.default_rng(0).uniform(-1, 1, (11, 8, 8, 3)).astype(np.float32)
  feature_fn(images[:4])
  out["traces_after_first_batch"] = len(model.traced_shapes)
  got = np.concatenate([np.asarray(feature_fn(images[i:i + 4])) for i in range(0, 11, 4)])
  out["traced_shapes"] = list(model.traced_shapes)
  out["features"] = got.tolist()
  keras.config.disable_interactive_logging()
  out["reference"] = model.backbone(images, training=False).numpy().tolist()

  # `resize_on_device` over both replicas: batches of (canvases, meta) split per replica,
  # resampled in the replicas' function, against the host-resampled fast path.
  encoded = [dummy.photo_jpeg(h, w, 0, seed=i)
             for i, (h, w) in enumerate([(90, 120), (50, 70), (120, 160)])]
  source = fakes.encoded_dataset(encoded)
  scale = lambda images: images / 127.5 - 1.0  # noqa: E731
  window_fn = features.make_feature_fn(model, strategy, batch_size=2,
                                       inputs_fn=device_resample.inputs_fn(8, scale))
  windows = pipeline.make_pipeline(source, image_size=8, preprocess_fn=None, batch_size=2,
                                   training=False, resize_on_device=True)
  model.traced_shapes.clear()
  out["window_features"] = np.concatenate(
      [np.asarray(window_fn(batch)) for batch, _ in windows]).tolist()
  out["window_traced_shapes"] = model.traced_shapes
  host = np.stack([transforms.eval_image(e, 8, fast_decode=True) for e in encoded])
  out["window_reference"] = model.backbone(scale(host), training=False).numpy().tolist()
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main(sys.argv)
