"""On two logical CPU devices (standing in for two GPUs): `--jit_compile` with two replicas is
refused before any work, by the library and by the CLI; `mirrored` runs over the two
devices; the feature extractor runs one shape over both replicas. Prints JSON.

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


def main(argv):
  workdir = argv[1]
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  # pylint: disable=g-import-not-at-top
  from tests import test_gpu_paths
  from tfhub_transfer import cli
  from tfhub_transfer import experiment
  from tfhub_transfer import features
  from tfhub_transfer import training
  from tfhub_transfer.config import ExperimentConfig
  # pylint: enable=g-import-not-at-top
  out = {"mirrored_replicas": training.make_strategy("mirrored").num_replicas_in_sync}
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
  strategy = training.make_strategy("mirrored")
  with strategy.scope():
    model = test_gpu_paths.counting_head()
  feature_fn = features.make_feature_fn(model, strategy, batch_size=4)
  images = np.random.default_rng(0).uniform(-1, 1, (11, 8, 8, 3)).astype(np.float32)
  feature_fn(images[:4])
  out["traces_after_first_batch"] = len(model.traced_shapes)
  got = np.concatenate([np.asarray(feature_fn(images[i:i + 4])) for i in range(0, 11, 4)])
  out["traced_shapes"] = model.traced_shapes
  out["features"] = got.tolist()
  keras.config.disable_interactive_logging()
  out["reference"] = model.backbone(images, training=False).numpy().tolist()
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main(sys.argv)
