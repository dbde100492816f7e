"""Figure 7: how each phase's cost grows with its work. Time and peak memory of feature
extraction, of the logreg L2 path and of a training step at three sizes each, and the growth
exponent fitted to them (cost ~ size ** exponent, least squares on log-log).

Each curve is measured in a fresh process (`python -m bench.curves '<json>'`), its sizes in
increasing order, so that memory a previous curve freed but the allocator kept does not hide
this one's growth.
"""

import json
import sys
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from bench import data
from bench import growth
from bench import harness
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer import training
from tfhub_transfer.data import splits
from tfhub_transfer.transfer_head import build_transfer_head


def curve_extraction(profile: Profile, memory_runs: dict[int, list[dict]]) -> growth.Curve:
  """From figure 5's fresh processes: extraction seconds and peak RSS growth per count."""
  counts = sorted(memory_runs)
  return growth.Curve(
      key="7a", title="feature extraction, by images", size_label="images", sizes=counts,
      seconds=[[run["seconds"] for run in memory_runs[c]] for c in counts],
      peak_mib=[[run["peak_rss_mib"] - run["rss_before_mib"] for run in memory_runs[c]]
                for c in counts],
      setup=(f"figure 5's runs: a fresh process per run extracting N images with "
             f"{profile.memory_model} (random init) at {profile.memory_image_size} px, batch "
             f"{profile.memory_batch}, JPEGs cycled lazily from disk; seconds of "
             f"extract_features (its pipeline's start-up included), memory = peak RSS minus "
             f"RSS before extracting"))


def _measure_sizes(sizes: Sequence[int], run_fn: Callable[[int], Callable[[], object]],
                   repetitions: int) -> tuple[list[list[float]], list[list[float]], str]:
  """Per size, the seconds and peak memory (MiB above this process's before the first size)
  of `repetitions` runs, after one untimed run per size; and what memory that is."""
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:  # The work's memory is the device's: TensorFlow's allocator counts its peak.
    def peak_of(fn):
      tf.config.experimental.reset_memory_stats(gpus[0].name)
      seconds, _, _ = growth.measure_peak(fn)
      return seconds, tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    start, memory = 0.0, f"peak {gpus[0].name} memory (TensorFlow's allocator)"
  else:
    def peak_of(fn):
      seconds, peak, _ = growth.measure_peak(fn)
      return seconds, peak
    start = growth.current_rss_mib()
    memory = ("peak resident memory above the process's before the first size (Linux VmHWM "
              "reset before each run)")
  seconds, peaks = [], []
  for size in sizes:
    fn = run_fn(size)
    fn()
    runs = [peak_of(fn) for _ in range(repetitions)]
    seconds.append([s for s, _ in runs])
    peaks.append([max(peak - start, 0.0) for _, peak in runs])
  return seconds, peaks, memory


def _logreg_run(num_examples: int, dim: int, num_classes: int) -> Callable[[], object]:
  x, y = data.make_class_features(num_examples, dim, num_classes, seed=0)
  is_val = splits.stratified_split(y, fraction=0.2, seed=0)
  grid = protocol.l2_grid(45)
  return lambda: logreg.select_and_refit(
      x[~is_val], y[~is_val], x[is_val], y[is_val], multi_label=False,
      num_classes=num_classes, metric_fn=metrics.top1_accuracy, l2_values=grid)


def _training_run_fn(model_name: str, image_size: int, steps: int, total_steps: int):
  spec = backbones.get_backbone_spec(model_name, image_size=image_size or None)
  strategy = training.make_strategy("auto")
  with strategy.scope():
    model = build_transfer_head(spec, regime="finetune", num_classes=10,
                                weights=regimes.RANDOM)
    training.compile_model(model, learning_rate=0.01, train_steps=total_steps)

  def run_fn(batch):
    images = tf.random.uniform([batch, spec.image_size, spec.image_size, 3], -1.0, 1.0,
                               seed=0)
    labels = tf.constant(np.arange(batch) % 10, tf.int64)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    return lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)

  return run_fn, spec, strategy


def _child(spec: dict) -> dict:
  """One curve, in this (fresh) process."""
  if spec["kind"] == "training":
    run_fn, backbone, strategy = _training_run_fn(
        spec["model"], spec["image_size"], spec["steps"],
        spec["steps"] * (spec["repetitions"] + 1) * len(spec["sizes"]))
    extra = {"image_size": backbone.image_size,
             "devices": training.devices_of(strategy)}
  elif spec["kind"] == "logreg_examples":
    def run_fn(n):
      return _logreg_run(n, spec["dim"], spec["classes"])
    extra = {}
  else:
    def run_fn(d):
      return _logreg_run(spec["examples"], d, spec["classes"])
    extra = {}
  seconds, peaks, memory = _measure_sizes(spec["sizes"], run_fn, spec["repetitions"])
  return {"seconds": seconds, "peak_mib": peaks, "memory": memory, **extra}


def curves_logreg(profile: Profile) -> list[growth.Curve]:
  """The 45-value path + refit on synthetic features, by examples and by feature dims."""
  classes, reps = profile.curve_classes, profile.curve_repetitions
  by_examples = harness.run_child("bench.curves", {
      "kind": "logreg_examples", "sizes": list(profile.curve_examples),
      "dim": profile.curve_fixed_dim, "classes": classes, "repetitions": reps})
  by_dims = harness.run_child("bench.curves", {
      "kind": "logreg_dims", "sizes": list(profile.curve_dims),
      "examples": profile.curve_fixed_examples, "classes": classes, "repetitions": reps})
  common = (f"logreg.select_and_refit over l2_grid(45) + refit, {classes} classes, 20% "
            f"stratified validation, class-structured synthetic features (figure 2's, held in "
            f"memory: part of the peak); a fresh process per curve, {reps} runs per size "
            f"after an untimed one; memory: {by_examples['memory']}")
  return [
      growth.Curve(key="7b", title="logreg L2 path, by examples", size_label="examples",
                   sizes=list(profile.curve_examples), seconds=by_examples["seconds"],
                   peak_mib=by_examples["peak_mib"], goal=profile.curve_examples_goal,
                   setup=f"{profile.curve_fixed_dim} features; {common}"),
      growth.Curve(key="7c", title="logreg L2 path, by feature dims", size_label="dims",
                   sizes=list(profile.curve_dims), seconds=by_dims["seconds"],
                   peak_mib=by_dims["peak_mib"],
                   setup=f"{profile.curve_fixed_examples:,} examples; {common}"),
  ]


def curve_training(profile: Profile) -> growth.Curve:
  """Training steps at several batch sizes, on in-memory batches."""
  steps, reps = profile.curve_train_steps, profile.curve_repetitions
  out = harness.run_child("bench.curves", {
      "kind": "training", "sizes": list(profile.curve_train_batches),
      "model": profile.curve_train_model, "image_size": profile.curve_train_image_size,
      "steps": steps, "repetitions": reps})
  return growth.Curve(
      key="7d", title="training step, by batch size (seconds per step)",
      size_label="batch", sizes=list(profile.curve_train_batches),
      seconds=[[s / steps for s in times] for times in out["seconds"]],
      peak_mib=out["peak_mib"],
      setup=(f"TransferHead({profile.curve_train_model}, random init) at "
             f"{out['image_size']} px, finetune regime, SGD + Nesterov, on "
             f"{', '.join(out['devices'])}; in a fresh process, model.fit of {steps} steps on "
             f"one in-memory batch, {reps} runs per size after an untimed one (which traces "
             f"it); memory: {out['memory']}"))


if __name__ == "__main__":
  import keras  # pylint: disable=g-import-not-at-top
  keras.config.disable_interactive_logging()
  print(json.dumps(_child(json.loads(sys.argv[1]))))
