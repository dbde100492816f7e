"""Trains one XLA-compiled step of a tiny `TransferHead` at a learning rate and weight decay;
prints its loss and the programs in the persistent XLA cache (JSON).

Run as its own process, with TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR set
before TensorFlow starts: `python -m tests.xla_cache_check LEARNING_RATE WEIGHT_DECAY DIR`.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tfhub_transfer import training
from tfhub_transfer import transfer_head


def main(argv):
  learning_rate, weight_decay, cache_dir = float(argv[1]), float(argv[2]), argv[3]
  keras.utils.set_random_seed(0)
  backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                               keras.layers.GlobalAveragePooling2D()], name="tiny")
  model = transfer_head.TransferHead(backbone, num_classes=3, regime="scratch",
                                     weight_decay=weight_decay, learning_rate=learning_rate)
  model(tf.zeros((1, 8, 8, 3)))
  training.compile_model(model, learning_rate=learning_rate, train_steps=10, jit_compile=True)
  rng = np.random.default_rng(0)
  data = tf.data.Dataset.from_tensor_slices(
      (rng.uniform(-1, 1, (4, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 4))
  ).batch(4).repeat()
  kernels = sum(float(np.sum(np.square(w))) for w in model.trainable_weights
                if len(w.shape) >= 2)  # Before the step: the penalty of its loss.
  history = model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
  json.dump({"loss": history.history["loss"][0], "kernels_squared": kernels,
             "files": sorted(f for f in os.listdir(cache_dir) if f.endswith(".pb"))},
            sys.stdout)


if __name__ == "__main__":
  main(sys.argv)
