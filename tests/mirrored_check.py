"""Runs one training step on 1 and on 2 replicas (two logical CPU devices); prints JSON.

The backbone is a small CNN with two batch norms (`tiny_backbone`): the replicas must agree on
the loss, the gradients and the batch statistics as MobileNet's would, and it traces in a
fraction of MobileNet's time (about 30 CPU-seconds less per run).

Run as its own process: logical devices must be set before TensorFlow starts, which a test
process that already ran other tests cannot do. tests/gpu_paths_check.py runs
`one_step_on_each` in its process (tests/test_distributed.py). `--devices=gpu` runs it on
GPUs 0 and 1 instead (bench/gpu_session.sh) and also prints, to stderr, how far the two runs
are apart.
"""

import json
import sys

import keras
import numpy as np
import tensorflow as tf

IMAGE_SIZE = 32


def tiny_backbone(image_size: int = IMAGE_SIZE, seed: int = 0) -> keras.Model:
  """conv -> batch norm -> ReLU, twice, -> global average pool (16 features), random init
  drawn from `seed` (tests/test_cell_model.py builds it as a `built` backbone too)."""
  inputs = keras.Input((image_size, image_size, 3))
  x = inputs
  for block, (filters, strides) in enumerate(((8, 2), (16, 1))):
    x = keras.layers.Conv2D(filters, 3, strides=strides,
                            kernel_initializer=keras.initializers.HeNormal(seed + block))(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
  return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def one_step_on_each(kind: str, two=None) -> dict:
  """One training step on one device and on two replicas of `kind` ("cpu": the logical
  devices set by the caller; "gpu"): the losses, batch-norm flags and updated weights.

  `two`: the MirroredStrategy to use (default: a new one on devices 0 and 1). A process
  runs its collectives through one: each MirroredStrategy numbers its collectives from the
  same start, so a second one's batch-norm all-reduce would clash with the first's.
  """
  from tfhub_transfer import training  # After device setup.
  from tfhub_transfer import transfer_head  # After device setup.
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (8, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
  labels = rng.integers(0, 3, 8)
  head = rng.normal(0, 0.1, (16, 3)).astype("float32")
  out = {}
  strategies = {"one": tf.distribute.OneDeviceStrategy(f"/{kind}:0"),
                "two": two or tf.distribute.MirroredStrategy([f"/{kind}:0", f"/{kind}:1"])}
  for name, strategy in strategies.items():
    with strategy.scope():
      model = transfer_head.TransferHead(tiny_backbone(), num_classes=3, regime="scratch",
                                         weight_decay=1e-3, learning_rate=0.1)
      model(tf.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
      model.head.kernel.assign(head)  # A nonzero head, so the backbone gets gradients.
      training.batch_norm_setup(model, num_train_examples=800, batch_size=8)
      training.compile_model(model, learning_rate=0.1, train_steps=10)
    batch_norms = [layer for layer in model.backbone.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    out.setdefault("initial", [w.numpy().tolist() for w in model.weights])
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()
    history = model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    out[name] = {"replicas": strategy.num_replicas_in_sync,
                 "loss": history.history["loss"][0],
                 "synchronized": [layer.synchronized for layer in batch_norms],
                 "weights": [w.numpy().tolist() for w in model.weights]}
  return out


def main():
  kind = "gpu" if "--devices=gpu" in sys.argv[1:] else "cpu"
  if kind == "cpu":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  out = one_step_on_each(kind)
  json.dump(out, sys.stdout)
  if kind == "gpu":  # test_distributed.py's tolerances: 1e-4 of each array's scale.
    worst = max(np.abs(np.array(b) - np.array(a)).max() / (np.abs(np.array(a)).max() + 1.0)
                for a, b in zip(out["one"]["weights"], out["two"]["weights"]))
    print(f"\ntwo replicas vs one: loss {out['one']['loss']:.6g} vs {out['two']['loss']:.6g}, "
          f"largest weight difference {worst:.3g} of its array's scale (CPU test: <= 1e-4)",
          file=sys.stderr)


if __name__ == "__main__":
  main()
