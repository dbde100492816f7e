"""Trains one XLA-compiled step of a tiny `TransferHead` per trial, each trial a new model at
its own learning rate and weight decay, each in a process of its own; prints each trial's
loss and the programs in the persistent XLA cache after it (JSON, a list in trial order).

Run with TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR set before TensorFlow starts:
`python -m tests.xla_cache_check DIR LEARNING_RATE,WEIGHT_DECAY [LEARNING_RATE,WEIGHT_DECAY ...]`.

The trials' processes are forked from this one once TensorFlow, Keras and the package are
imported (the imports are most of a process's cost) and before TensorFlow's runtime starts
(no op has run): each trial starts it afresh and traces its step as a new process would,
one after the other, so a trial finds the programs the trials before it left in the cache.
"""

import json
import os
import sys
import traceback

import keras
import numpy as np
import tensorflow as tf

from tfhub_transfer import training
from tfhub_transfer import transfer_head


def run_trial(learning_rate, weight_decay, cache_dir):
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
  return {"loss": history.history["loss"][0], "kernels_squared": kernels,
          "lr": learning_rate, "wd": weight_decay, "pid": os.getpid(),
          "files": sorted(f for f in os.listdir(cache_dir) if f.endswith(".pb"))}


def in_own_process(fn, *args):
  """`fn(*args)` in a forked process; its JSON-able result, or its traceback raised here."""
  read_end, write_end = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read_end)
    try:
      out, code = json.dumps({"result": fn(*args)}), 0
    except BaseException:  # pylint: disable=broad-except
      out, code = json.dumps({"error": traceback.format_exc()}), 1
    with os.fdopen(write_end, "w") as f:
      f.write(out)
    os._exit(code)  # pylint: disable=protected-access
  os.close(write_end)
  with os.fdopen(read_end) as f:
    text = f.read()
  os.waitpid(pid, 0)
  answer = json.loads(text) if text else {"error": f"trial process {pid} died"}
  if "error" in answer:
    raise RuntimeError(answer["error"])
  return answer["result"]


def main(argv):
  cache_dir, trials = argv[1], [tuple(map(float, arg.split(","))) for arg in argv[2:]]
  json.dump([in_own_process(run_trial, lr, wd, cache_dir) for lr, wd in trials], sys.stdout)


if __name__ == "__main__":
  main(sys.argv)
