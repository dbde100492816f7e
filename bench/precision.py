"""Figure 8: training-step throughput in mixed precision and with XLA against float32 without
XLA, on the same backbone, batch and in-memory data (reported, no goal: on CPU these may be
slower)."""

import numpy as np
import tensorflow as tf

from bench import harness
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import regimes
from tfhub_transfer import training
from tfhub_transfer.transfer_head import build_transfer_head

NUM_CLASSES = 10


def _setting_name(precision: str, jit_compile: bool) -> str:
  return precision + (" + XLA" if jit_compile else "")


def figures_precision(profile: Profile) -> list[harness.Figure]:
  """One figure per (precision, jit_compile) of `precision_settings`: float32 without XLA's
  time for `precision_steps` steps over that setting's (a speed-up: > 1 is faster)."""
  spec = backbones.get_backbone_spec(profile.precision_model,
                                     image_size=profile.precision_image_size or None)
  batch, steps = profile.precision_batch, profile.precision_steps
  # One device: XLA is refused on several replicas (devices.resolve_strategy), and the
  # figure compares settings, not replica counts.
  strategy = training.make_strategy(
      "one_device" if tf.config.list_logical_devices("GPU") else "default")
  images = tf.random.uniform([batch, spec.image_size, spec.image_size, 3], -1.0, 1.0, seed=0)
  labels = tf.constant(np.arange(batch) % NUM_CLASSES, tf.int64)
  data = tf.data.Dataset.from_tensors((images, labels)).repeat()
  settings = [("float32", False)] + list(profile.precision_settings)
  models = []
  for precision, jit_compile in settings:
    with strategy.scope():
      with training.precision_policy(precision):
        model = build_transfer_head(spec, regime="finetune", num_classes=NUM_CLASSES,
                                    weights=regimes.RANDOM)
      training.check_precision(model, precision)
      # The schedule spans every step the figure runs, so the learning rate stays positive.
      training.compile_model(model, learning_rate=0.01,
                             train_steps=steps * (profile.precision_repetitions + 2),
                             jit_compile=jit_compile)
    models.append(model)

  def run_steps(model):
    return lambda: model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)

  seconds = harness.interleave([run_steps(model) for model in models],
                               profile.precision_repetitions)
  baseline = harness.Measurement(
      f"model.fit, float32, no XLA, {steps} steps on one in-memory batch", "s", seconds[0])
  devices = ", ".join(training.devices_of(strategy))
  figures = []
  for letter, (precision, jit_compile), times in zip("abcdefgh", settings[1:], seconds[1:]):
    name = _setting_name(precision, jit_compile)
    figures.append(harness.Figure(
        key=f"8{letter}", title=f"training-step throughput, {name} / float32",
        measured=harness.Measurement(f"model.fit, {name}, {steps} steps on the same batch",
                                     "s", times),
        baseline=baseline, ratio_of=harness.BASELINE_OVER_MEASURED, goal="",
        setup=(f"TransferHead({profile.precision_model}, random init) at {spec.image_size} "
               f"px, finetune regime, batch {batch}, SGD + Nesterov, on {devices}; each "
               f"setting compiled once and warmed up (tracing"
               f"{', XLA compilation' if jit_compile else ''}) before timing; mixed "
               f"precision keeps the head, the loss and the variables float32"
               f"{' and scales the float16 loss' if precision == 'mixed_float16' else ''}. "
               f"Reported, no goal: a CPU may lack fast half-precision kernels, and XLA's "
               f"gains come from fusing the many small ops a GPU launches one by one")))
  return figures
