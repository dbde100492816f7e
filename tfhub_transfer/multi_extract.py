"""Decode once per sweep: the features of several backbones of one resolution from one pass.

A logreg sweep crosses backbones with datasets, and 12 of the paper's 16 backbones read 224-px
inputs. A cell extracting on its own decodes, resizes and crops every image of its dataset;
a sweep of k such backbones would do it k times, and on a GPU, where the forward pass is far
cheaper than on CPU and JPEG decoding is not, that would dominate. Here one pass over a split
decodes, resizes and crops each image once (`pipeline.make_shared_eval_pipeline`), applies
each backbone's own input convention to it, and hands every batch to each backbone's
`features.extract_features` (on a thread of its own, the backbones computing one at a time),
which writes that backbone's cache entry under the key its cell uses
(`CellContext.feature_key_parts`). The cells then run as usual and find their features
in the cache (their records show cache hits; the pass's time is logged).

One pass rather than a cache of decoded images: the features must be bit-for-bit those of the
one-model path, whose resized images are float32 (antialiased resampling). A uint8 image
cache would round them (other features), a float32 one would hold 600 KB per 224-px image
(about 10 times the JPEG) on disk. The pass costs only the memory of the backbones it holds
at once.

Every entry is written by `extract_features` (under a temporary name, renamed when complete),
so a pass killed midway leaves no entry that reads as complete. When one backbone's
extraction fails, the pass stops, the others' partial entries are removed, and the error is
raised; `with_shared_decoding` then lets each cell extract (or fail, recorded) on its own.
"""

import collections
import dataclasses
import functools
import queue
import threading
import time
from typing import Any, Callable, Hashable, Iterator, Mapping, Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import faults
from tfhub_transfer import features as features_lib
from tfhub_transfer import progress
from tfhub_transfer import regimes
from tfhub_transfer import runners
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import crops
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn


@dataclasses.dataclass(frozen=True)
class Target:
  """One backbone's share of a shared pass.

  Attributes:
    feature_fn: images [B, S, S, 3], in the backbone's convention -> features [B, D].
    preprocessing: the backbone's input convention (a `preprocessing.get_preprocess_fn` name).
    key: its feature-cache entry (`features.cache_key`).
    description: shown in logs and stored in the entry.
    key_parts: what the key was made from (stored in the entry's meta.json).
  """
  feature_fn: Callable[[tf.Tensor], Any]
  preprocessing: str
  key: str
  description: str = ""
  key_parts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_END = object()


class _Consumer:
  """One backbone's `extract_features`, run on its own thread and fed one batch at a time.

  The thread asks for each item (`_wants`: True) before it takes one, and says False once
  `extract_features` has returned or raised; so the caller knows when the thread is done with
  a batch.
  """

  def __init__(self, extract_fn: Callable[[Iterator], features_lib.CachedFeatures], *,
               name: str):
    self._items = queue.Queue(maxsize=1)
    self._wants = queue.Queue()
    self._wanting = False
    self.finished = False
    self.result: Optional[features_lib.CachedFeatures] = None
    self.error: Optional[BaseException] = None
    self._thread = threading.Thread(target=self._run, args=(extract_fn,),
                                    name=f"extract-{name}", daemon=True)
    self._thread.start()

  def _batches(self):
    while True:
      self._wants.put(True)
      item = self._items.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item

  def _run(self, extract_fn):
    # One progress bar per pass (the caller's), not one per backbone drawn over each other:
    # Keras keeps this setting per thread, so this thread's bar only logs its last line.
    keras.config.disable_interactive_logging()
    try:
      self.result = extract_fn(self._batches())
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by the caller)
      self.error = e
    finally:
      self._wants.put(False)

  def ready(self) -> bool:
    """Waits until the thread wants its next item (True) or has finished (False)."""
    if not self._wanting and not self.finished:
      if self._wants.get():
        self._wanting = True
      else:
        self.finished = True
    return self._wanting

  def give(self, item) -> None:
    """Hands a batch, `_END`, or an exception to raise there, to a `ready` thread."""
    self._wanting = False
    self._items.put(item)

  def join(self) -> None:
    self._thread.join()


def extract_shared(ds: tf.data.Dataset, *, image_size: int, batch_size: int,
                   targets: Sequence[Target], cache_dir: str, description: str = "",
                   num_batches: Optional[int] = None,
                   eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING,
                   fast_decode: bool = False,
                   resize_on_device: bool = False) -> list[features_lib.CachedFeatures]:
  """Decodes `ds` once and writes every target's feature-cache entry from that one pass.

  Args:
    ds: dataset of {"image": encoded bytes, "label": ...}, in a fixed order.
    image_size: the resolution every target reads.
    batch_size: batch size (the one-model path's, so that features match it bit for bit).
    targets: the backbones; those sharing a convention share its preprocessed images.
    cache_dir: the feature-cache root.
    description: what is decoded, for the log.
    num_batches: for the progress bars' ETA.
    eval_preprocessing, fast_decode, resize_on_device: as for `pipeline.make_pipeline` (with
      `resize_on_device`, each target's `feature_fn` takes windows: `make_feature_fn`).

  Returns:
    Each target's cached features, in the order of `targets`.

  Raises:
    Whatever a target's extraction or the input pipeline raised (the first error); no entry
    of this pass is then left half-written.
  """
  conventions = {t.preprocessing: get_preprocess_fn(t.preprocessing) for t in targets}
  batches = pipeline.make_shared_eval_pipeline(ds, image_size=image_size,
                                               preprocess_fns=conventions,
                                               batch_size=batch_size,
                                               eval_preprocessing=eval_preprocessing,
                                               fast_decode=fast_decode,
                                               resize_on_device=resize_on_device)
  consumers = [
      _Consumer(functools.partial(
          features_lib.extract_features, t.feature_fn, cache_dir=cache_dir, key=t.key,
          num_batches=num_batches, description=t.description, key_parts=dict(t.key_parts)),
                name=t.key[:8])
      for t in targets]
  bar = progress.Progress(num_batches, description=f"decode pass over {description}",
                          unit="batch")
  iterator = [iter(batches)]  # In a list, so that the last reference can be handed off.
  try:
    step = 0
    for step, (images, labels) in enumerate(iterator[0], 1):
      for target, consumer in zip(targets, consumers):
        if consumer.ready():
          consumer.give((images[target.preprocessing], labels))
          # One backbone computes at a time (each has the cores, or the device, to itself),
          # while the input pipeline decodes the next batches in the background.
          consumer.ready()
        if consumer.error is not None:
          raise consumer.error
      bar.update(step)
    bar.finish(step)
    # Deleting the exhausted iterator can stall for seconds (tf.data's autotuning thread):
    # measured, 4.5 s after the last of 8 batches in one pass of four.
    features_lib.release_in_background(iterator)
    for consumer in consumers:
      if consumer.ready():
        consumer.give(_END)
  except BaseException as e:
    stop = RuntimeError(f"The shared decode pass over {description} stopped: "
                        f"{type(e).__name__}: {e}")
    for consumer in consumers:
      if consumer.ready():
        consumer.give(stop)  # Its extract_features removes its partial entry and re-raises.
    for consumer in consumers:
      consumer.join()
    raise
  for consumer in consumers:
    consumer.join()
  for consumer in consumers:
    if consumer.error is not None:
      raise consumer.error
  return [consumer.result for consumer in consumers]


def decode_group(config: ExperimentConfig) -> Optional[Hashable]:
  """What a logreg cell's decoded images depend on: cells with equal groups can share a pass.

  The dataset and how its splits are drawn (seed, cap, low-data subset, data dir), the
  resolution, the batch (the one-model path's batches, so features match it bit for bit), the
  strategy, and the workdir whose cache they fill. None for other regimes, for randomly
  initialised backbones (each is drawn from the cell's seed when its cell runs), and for a
  model the registry cannot resolve (its cell reports that error itself).
  """
  if config.regime_spec.get_runner() is not runners.run_logreg:
    return None
  if config.regime_spec.resolve_weights(config.weights) == regimes.RANDOM:
    return None
  try:
    spec = backbones.get_backbone_spec(config.model, model_kwargs=config.model_kwargs,
                                       image_size=config.image_size or None)
  except (ValueError, FileNotFoundError):
    return None
  return (config.workdir, config.dataset, config.data_dir, config.manual_dir, config.seed,
          config.max_examples, config.examples_per_class, config.batch_size, config.strategy,
          spec.image_size, config.eval_preprocessing, config.fast_decode,
          config.resize_on_device)


def extract_cells(configs: Sequence[ExperimentConfig]) -> int:
  """Fills the feature cache of logreg cells of one `decode_group`, one decode pass per split.

  Splits whose entries are all cached are skipped; each backbone is built once, on its first
  missing entry.

  Returns:
    The number of entries written.

  Raises:
    ValueError: the cells are not all of one decode group.
    Whatever loading the dataset, building a backbone or extracting raised.
  """
  groups = {decode_group(config) for config in configs}
  if len(groups) != 1 or None in groups:
    raise ValueError(f"extract_cells needs logreg cells of one decode group; got "
                     f"{[config.cell for config in configs]}.")
  first = configs[0]
  contexts = [runners.load_cell(first)]  # Loads the splits, which every cell shares.
  contexts += [runners.load_cell(config, splits=contexts[0].splits) for config in configs[1:]]
  splits = contexts[0].splits
  image_size = contexts[0].backbone.image_size
  cache_dir = runners.feature_cache_dir(first)
  feature_fns = {}
  written = 0
  for split in runners.FEATURE_SPLITS:
    targets, names = [], []
    for index, ctx in enumerate(contexts):
      parts = ctx.feature_key_parts(split)
      key = features_lib.cache_key(parts)
      if features_lib.load_cached(cache_dir, key) is not None:
        continue
      if index not in feature_fns:
        feature_fns[index] = ctx.make_feature_fn()
      targets.append(Target(feature_fns[index], ctx.backbone.preprocessing, key,
                            f"{ctx.config.model}/{ctx.config.dataset}/{split}", parts))
      names.append(ctx.config.model_label)
    if not targets:
      continue
    what = f"{first.dataset}/{split} (seed {first.seed})"
    logging.info("Decode pass over %s: %d images at %d px, decoded once for %d backbones: %s",
                 what, splits.sizes[split], image_size, len(targets), ", ".join(names))
    start = time.perf_counter()
    extract_shared(getattr(splits, split), image_size=image_size,
                   batch_size=first.batch_size, targets=targets, cache_dir=cache_dir,
                   description=what, num_batches=contexts[0].num_batches(split),
                   eval_preprocessing=first.eval_preprocessing, fast_decode=first.fast_decode,
                   resize_on_device=first.resize_on_device)
    logging.info("Decode pass over %s done in %.1f s.", what, time.perf_counter() - start)
    written += len(targets)
  return written


def with_shared_decoding(cells: Sequence[ExperimentConfig], run_fn: Callable, *,
                         stored=None) -> Callable:
  """Wraps a sweep's `run_fn(config, *, store)` so that logreg cells share decode passes.

  Before the first cell of a `decode_group` with several cells runs, the features of the
  group's cells not yet stored as done are extracted together (`extract_cells`); each cell
  then reads them from the cache. If that pass fails (a missing dataset, a backbone that
  cannot be built), it is logged and every cell runs on its own, recording its own failure.

  Args:
    cells: the sweep's cells, in the order they run.
    run_fn: runs one cell, e.g. `experiment.run_experiment`.
    stored: where done cells are looked up (`merged.read_workdir`; default: the store
      `run_fn` is given).

  Returns:
    A function with `run_fn`'s signature.
  """
  groups = collections.defaultdict(list)
  for config in cells:
    group = decode_group(config)
    if group is not None:
      groups[group].append(config)
  passed = set()

  def run(config: ExperimentConfig, *, store):
    group = decode_group(config)
    if group is not None and group not in passed:
      passed.add(group)
      done = stored or store
      pending = [c for c in groups[group] if not done.has_ok(*c.cell)]
      if len(pending) > 1:
        try:
          extract_cells(pending)
        except faults.MachineFault:  # A full disk: the cells would meet it too.
          raise
        except Exception as e:  # pylint: disable=broad-except  (each cell records its own)
          faults.raise_if_interrupted(e)
          logging.warning("The shared decode pass for %s failed (%s: %s); each cell "
                          "extracts its own features.", config.dataset, type(e).__name__, e)
    return run_fn(config, store=store)

  return run
