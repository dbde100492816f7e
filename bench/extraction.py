"""Figures 1 and 5: feature extraction's throughput against the backbone alone, and its peak
memory as the image count grows."""

import os
import shutil
import threading

import numpy as np
import tensorflow as tf

from bench import data
from bench import harness
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import features
from tfhub_transfer import regimes
from tfhub_transfer import training
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn
from tfhub_transfer.transfer_head import build_transfer_head


def build_extractor(model: str, image_size: int):
  """(feature_fn, spec, strategy) of a random-init backbone as `run_logreg` builds it
  (random weights run at the speed of trained ones and need no download)."""
  spec = backbones.get_backbone_spec(model, image_size=image_size or None)
  strategy = training.make_strategy("auto")
  with strategy.scope():
    head = build_transfer_head(spec, regime="logreg", num_classes=10,
                               weights=regimes.RANDOM)
  return features.make_feature_fn(head, strategy), spec, strategy


def extraction_pipeline(ds: tf.data.Dataset, spec: backbones.BackboneSpec,
                        batch_size: int) -> tf.data.Dataset:
  return pipeline.make_pipeline(ds, image_size=spec.image_size,
                                preprocess_fn=get_preprocess_fn(spec.preprocessing),
                                batch_size=batch_size, training=False)


def figure_throughput(profile: Profile, workdir: str, *, key: str, model: str,
                      num_images: int) -> harness.Figure:
  """Figure 1: `extract_features` over the full input path vs the forward pass alone.

  The input pipeline alone (no backbone) is timed too: where both share the same cores
  (CPU) and the backbone keeps them busy, the full path can reach at most
  forward / (forward + pipeline) of the baseline.
  """
  batch = profile.extract_batch
  if num_images % batch:
    raise ValueError(f"num_images={num_images} must be a multiple of the batch ({batch}), "
                     f"so that both sides run the same batches.")
  feature_fn, spec, strategy = build_extractor(model, profile.image_size)
  records = data.write_jpeg_tfrecord(os.path.join(workdir, f"fig{key}.tfrecord"), num_images,
                                     seed=1)
  # In host memory, as the measured path's batches arrive from tf.data: on a GPU each call
  # then copies its batch to the device on both sides.
  images = np.random.default_rng(0).uniform(
      -1.0, 1.0, (batch, spec.image_size, spec.image_size, 3)).astype(np.float32)
  cache_dir = os.path.join(workdir, f"fig{key}_cache")
  runs = []

  def batches():
    return extraction_pipeline(data.read_jpeg_tfrecord(records), spec, batch)

  def forward_alone():
    for _ in range(num_images // batch):
      np.asarray(feature_fn(images))

  def full_path():
    runs.append(features.extract_features(feature_fn, batches(), cache_dir=cache_dir,
                                          key=f"run{len(runs)}", description="bench"))
    if runs[-1].features.shape[0] != num_images:
      raise AssertionError(f"extracted {runs[-1].features.shape[0]} of {num_images}")
    shutil.rmtree(runs[-1].path)

  def pipeline_alone():
    iterator = [iter(batches())]
    for _ in iterator[0]:
      pass
    # As extract_features does: an exhausted iterator's deletion can stall (see there).
    threading.Thread(target=iterator.clear, daemon=True).start()

  forward_s, full_s, pipeline_s = harness.interleave(
      [forward_alone, full_path, pipeline_alone], profile.extract_repetitions)
  forward, pipe = float(np.median(forward_s)), float(np.median(pipeline_s))
  return harness.Figure(
      key=key, title=f"feature-extraction throughput, {model}: full path / forward alone",
      measured=harness.Measurement(
          f"extract_features: TFRecord JPEGs -> decode -> preprocess -> {model} -> cache, "
          f"{num_images} images", "s", full_s),
      baseline=harness.Measurement(
          f"{model} forward alone on a pre-made [{batch}, {spec.image_size}, "
          f"{spec.image_size}, 3] host array (copied to the device per batch, as the full "
          f"path's are), {num_images // batch} batches", "s", forward_s),
      ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 0.90",
      extra=[harness.Measurement(f"input pipeline alone (no backbone), {num_images} images",
                                 "s", pipeline_s)],
      setup=(f"{model} (random init) at {spec.image_size} px, batch {batch}, on "
             f"{', '.join(training.devices_of(strategy))}; synthetic photo-like JPEGs "
             f"(longer side 300-512 px, quality 90, mean "
             f"{os.path.getsize(records) / num_images / 1024:.0f} KiB) read from a TFRecord "
             f"file; {num_images} images per run. Input pipeline alone: "
             f"{num_images / pipe:.0f} images/s, backbone alone {num_images / forward:.0f} "
             f"images/s" + ("" if tf.config.list_logical_devices("GPU") else
                            f"; both share the same CPU cores, so where the backbone alone "
                            f"keeps them busy the full path can reach at most forward / "
                            f"(forward + pipeline) = {forward / (forward + pipe):.3f} (a "
                            f"little more where the backbone leaves cycles idle)")))


def run_memory_child(spec: dict) -> dict:
  """One extraction of `spec["count"]` images in a fresh process: its peak RSS in MiB (and
  its RSS before extracting, and the extraction's seconds)."""
  return harness.run_child("bench.memory_child", spec)


def memory_runs(profile: Profile, workdir: str) -> dict[int, list[dict]]:
  """Per count of `memory_counts`, the outputs of `memory_repetitions` fresh processes that
  each extract that many images (`run_memory_child`), counts alternating."""
  side = profile.memory_image_size
  pool = min(256, max(profile.memory_counts))
  records = data.write_jpeg_tfrecord(os.path.join(workdir, "fig5.tfrecord"), pool, seed=2,
                                     min_side=round(side * 1.2), max_side=round(side * 2))
  runs = {count: [] for count in profile.memory_counts}
  for repetition in range(profile.memory_repetitions):
    for count in profile.memory_counts:
      cache_dir = os.path.join(workdir, f"fig5_cache_{count}_{repetition}")
      runs[count].append(run_memory_child({"count": count, "model": profile.memory_model,
                                           "image_size": side, "batch": profile.memory_batch,
                                           "records": records, "cache_dir": cache_dir}))
      shutil.rmtree(cache_dir, ignore_errors=True)
  return runs


def figures_memory(profile: Profile, runs: dict[int, list[dict]]) -> list[harness.Figure]:
  """Figure 5: peak RSS of a fresh process that extracts N images, N in `memory_counts`,
  each against the first (smallest) count (`runs`: `memory_runs`)."""
  side = profile.memory_image_size
  pool = min(256, max(profile.memory_counts))
  peaks = {count: [out["peak_rss_mib"] for out in outs] for count, outs in runs.items()}
  growth = {count: [out["peak_rss_mib"] - out["rss_before_mib"] for out in outs]
            for count, outs in runs.items()}
  base = profile.memory_counts[0]
  figures = []
  for letter, count in zip("abcdefgh", profile.memory_counts[1:]):
    figures.append(harness.Figure(
        key=f"5{letter}", title=f"peak memory of extraction, {count:,} / {base:,} images",
        measured=harness.Measurement(f"peak RSS, {count:,} images", "MiB", peaks[count]),
        baseline=harness.Measurement(f"peak RSS, {base:,} images", "MiB", peaks[base]),
        ratio_of=harness.MEASURED_OVER_BASELINE, goal="< 1.10",
        setup=(f"a fresh process per run (its VmHWM); {profile.memory_model} (random init) "
               f"at {side} px, batch {profile.memory_batch}; {pool} JPEGs (longer side "
               f"{round(side * 1.2)}-{round(side * 2)} px) cycled lazily from a TFRecord "
               f"file; peak minus RSS before extraction: {base:,} images "
               f"{harness.format_value(float(np.median(growth[base])))} MiB, {count:,} "
               f"images {harness.format_value(float(np.median(growth[count])))} MiB")))
  return figures
