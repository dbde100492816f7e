"""Runs one training step on 1 and on 2 replicas (two logical CPU devices); prints JSON.

Run as its own process: logical devices must be set before TensorFlow starts, which a test
process that already ran other tests cannot do. `--devices=gpu` runs it on GPUs 0 and 1
instead (bench/gpu_session.sh) and also prints, to stderr, how far the two runs are apart.
"""

import json
import sys

import numpy as np
import tensorflow as tf


def main():
  kind = "gpu" if "--devices=gpu" in sys.argv[1:] else "cpu"
  if kind == "cpu":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from tfhub_transfer import backbones  # After device setup.
  from tfhub_transfer import training  # After device setup.
  from tfhub_transfer import transfer_head  # After device setup.
  spec = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.25},
                                     image_size=32)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
  labels = rng.integers(0, 3, 8)
  head = rng.normal(0, 0.1, (256, 3)).astype("float32")
  out = {}
  strategies = {"one": tf.distribute.OneDeviceStrategy(f"/{kind}:0"),
                "two": tf.distribute.MirroredStrategy([f"/{kind}:0", f"/{kind}:1"])}
  for name, strategy in strategies.items():
    with strategy.scope():
      model = transfer_head.build_transfer_head(spec, regime="scratch", num_classes=3,
                                                weight_decay=1e-3, learning_rate=0.1, seed=0)
      model.head.kernel.assign(head)  # A nonzero head, so the backbone gets gradients.
      training.batch_norm_setup(model, num_train_examples=800, batch_size=8)
      training.compile_model(model, learning_rate=0.1, train_steps=10)
    out.setdefault("initial", [w.numpy().tolist() for w in model.weights])
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()
    history = model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    out[name] = {"replicas": strategy.num_replicas_in_sync,
                 "loss": history.history["loss"][0],
                 "weights": [w.numpy().tolist() for w in model.weights]}
  json.dump(out, sys.stdout)
  if kind == "gpu":  # test_distributed.py's tolerances: 1e-4 of each array's scale.
    worst = max(np.abs(np.array(b) - np.array(a)).max() / (np.abs(np.array(a)).max() + 1.0)
                for a, b in zip(out["one"]["weights"], out["two"]["weights"]))
    print(f"\ntwo replicas vs one: loss {out['one']['loss']:.6g} vs {out['two']['loss']:.6g}, "
          f"largest weight difference {worst:.3g} of its array's scale (CPU test: <= 1e-4)",
          file=sys.stderr)


if __name__ == "__main__":
  main()
