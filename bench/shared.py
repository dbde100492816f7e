"""Figure 6: feature extraction for several backbones of one resolution in one decode pass
(`multi_extract.extract_shared`, as a logreg sweep runs it) against the sum of their forward
passes alone."""

import os
import shutil
import threading

import numpy as np
import tensorflow as tf

from bench import data
from bench import extraction
from bench import harness
from bench.profiles import Profile
from tfhub_transfer import features
from tfhub_transfer import multi_extract
from tfhub_transfer import training
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn


def figure_shared_extraction(profile: Profile, workdir: str) -> harness.Figure:
  """The shared pass over `shared_images` JPEGs for every backbone of `shared_models`, vs
  their forward passes alone, one after the other, on pre-made batches."""
  batch, num_images = profile.extract_batch, profile.shared_images
  if num_images % batch:
    raise ValueError(f"shared_images={num_images} must be a multiple of the batch ({batch}).")
  built = [extraction.build_extractor(model, profile.image_size)
           for model in profile.shared_models]
  specs = [spec for _, spec, _ in built]
  sizes = {spec.image_size for spec in specs}
  if len(sizes) != 1:
    raise ValueError(f"Figure 6 needs backbones of one resolution; {profile.shared_models} "
                     f"read {sorted(sizes)} px.")
  size = sizes.pop()
  records = data.write_jpeg_tfrecord(os.path.join(workdir, "fig6.tfrecord"), num_images,
                                     seed=4)
  # In host memory, copied to the device per batch as the measured path's batches are.
  images = np.random.default_rng(0).uniform(-1.0, 1.0, (batch, size, size, 3)).astype(
      np.float32)
  cache_dir = os.path.join(workdir, "fig6_cache")
  conventions = {spec.preprocessing: get_preprocess_fn(spec.preprocessing) for spec in specs}
  runs = []

  def forward_alone():
    for feature_fn, _, _ in built:
      for _ in range(num_images // batch):
        np.asarray(feature_fn(images))

  def check_and_remove(entries):
    for entry in entries:
      if entry.features.shape[0] != num_images:
        raise AssertionError(f"extracted {entry.features.shape[0]} of {num_images}")
      shutil.rmtree(entry.path)

  def shared_pass():
    runs.append(len(runs))
    targets = [multi_extract.Target(feature_fn, spec.preprocessing, f"run{runs[-1]}_{i}")
               for i, (feature_fn, spec, _) in enumerate(built)]
    check_and_remove(multi_extract.extract_shared(
        data.read_jpeg_tfrecord(records), image_size=size, batch_size=batch, targets=targets,
        cache_dir=cache_dir, description="bench"))

  def one_by_one():
    runs.append(len(runs))
    check_and_remove([features.extract_features(
        feature_fn, extraction.extraction_pipeline(data.read_jpeg_tfrecord(records), spec,
                                                   batch),
        cache_dir=cache_dir, key=f"run{runs[-1]}_{i}", description="bench")
                      for i, (feature_fn, spec, _) in enumerate(built)])

  def pipeline_alone():
    iterator = [iter(pipeline.make_shared_eval_pipeline(
        data.read_jpeg_tfrecord(records), image_size=size, preprocess_fns=conventions,
        batch_size=batch))]
    for _ in iterator[0]:
      pass
    threading.Thread(target=iterator.clear, daemon=True).start()  # As extract_features.

  reps = profile.shared_repetitions
  forward_s, shared_s, pipeline_s, single_s = harness.interleave(
      [forward_alone, shared_pass, pipeline_alone, one_by_one],
      [reps, reps, reps, max(1, reps // 2)])
  forward, pipe = float(np.median(forward_s)), float(np.median(pipeline_s))
  names = ", ".join(profile.shared_models)
  on_gpu = bool(tf.config.list_logical_devices("GPU"))
  return harness.Figure(
      key="6", title=f"extraction for {len(built)} backbones of one resolution in one decode "
                     f"pass / the sum of their forward passes",
      measured=harness.Measurement(
          f"multi_extract.extract_shared: TFRecord JPEGs -> one decode + resize + crop -> "
          f"{names} -> {len(built)} cache entries, {num_images} images", "s", shared_s),
      baseline=harness.Measurement(
          f"{names} forward alone on a pre-made [{batch}, {size}, {size}, 3] host array "
          f"(copied to the device per batch, as the measured path's are), "
          f"{num_images // batch} batches each, one after the other", "s", forward_s),
      ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 0.92",
      extra=[harness.Measurement(f"the shared input pipeline alone (no backbone), "
                                 f"{num_images} images", "s", pipeline_s),
             harness.Measurement(f"the same {len(built)} extractions one by one "
                                 f"(extract_features, one decode pass each)", "s", single_s)],
      setup=(f"{names} (random init) at {size} px, batch {batch}, on "
             f"{', '.join(training.devices_of(built[0][2]))}; {len(conventions)} input "
             f"convention(s) ({', '.join(conventions)}), each applied once per image; the "
             f"same synthetic JPEGs as figure 1 ({num_images} per run). Forward passes "
             f"alone {num_images * len(built) / forward:.0f} backbone-images/s, the shared "
             f"input pipeline alone {num_images / pipe:.0f} images/s"
             + ("" if on_gpu else
                f"; on shared CPU cores the pass can reach at most forward / (forward + "
                f"pipeline) = {forward / (forward + pipe):.3f}")
             + f"; one by one, each backbone decodes again: "
               f"{harness.format_value(float(np.median(single_s)))} s"))
