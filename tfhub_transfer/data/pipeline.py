"""The input pipeline: encoded images + labels -> batches of preprocessed images.

`make_pipeline` is the one core. It takes any `tf.data.Dataset` of
{"image": encoded bytes (tf.string), "label": int64 scalar or float32 multi-hot [C]}
(from `loading.load_splits`, an image folder, or `from_tensor_slices` in a test) and applies,
in this fixed order:
  1. read encoded bytes (sharded per input pipeline under `tf.distribute`);
  2. cache in memory (only when asked: for datasets that fit, see `choose_cache`): the
     encoded bytes, or the decoded uint8 images (decoded before caching, so later epochs
     skip decoding; the augmentation below still runs per step);
  3. shuffle (training only, seeded); a repeated training stream is a sequence of data
     epochs, each shuffled statelessly from (seed, epoch), so the order at any position is
     fixed: a run resumed at batch b (`start_batch`) sees what it would have seen;
  4. decode (unless cached decoded) + preprocess, in parallel:
       - any encoding or colour mode (grayscale, RGBA, palette, CMYK JPEG, 16-bit PNG, GIF,
         BMP, WebP) -> uint8 RGB;
       - training: Inception-style random-resized crop (area 8%-100%, aspect 3/4-4/3),
         resize to image_size, random horizontal flip; randomness is stateless, seeded by
         (seed, input pipeline, position in the stream), so a run is reproducible;
       - evaluation / feature extraction: resize the shorter side, then take the central
         image_size square, as `eval_preprocessing` says (`crops.EVAL_PREPROCESSINGS`;
         default crop fraction 0.875, bilinear: 256 -> 224);
       - float32 [0, 255] -> the backbone's own `preprocess_fn`;
  5. batch;
  6. prefetch.
Resizing is antialiased (the reference path of `transforms.py`); `fast_decode` takes its
fast path for JPEGs: other pixels, so it is a protocol setting. With `resize_on_device`
(evaluation), step 4 stops after decoding each image's window and step 5 pads the windows
into uint8 canvases; the resize and `preprocess_fn` then run in the accelerator's forward
function (`device_resample.py`).

`make_shared_eval_pipeline` is the evaluation path for several backbones of one resolution at
once (`multi_extract`): each image is decoded, resized and cropped once, then given to each
backbone's own `preprocess_fn`; its values are those `make_pipeline(training=False)` gives.
"""

from typing import Callable, Mapping, Optional

import tensorflow as tf

from tfhub_transfer.data import crops
from tfhub_transfer.data import threads
from tfhub_transfer.data import transforms
from tfhub_transfer.data.transforms import decode_rgb
from tfhub_transfer.data.transforms import eval_image
from tfhub_transfer.data.transforms import eval_window
from tfhub_transfer.data.transforms import make_eval_fn
from tfhub_transfer.data.transforms import make_train_fn

DEFAULT_SHUFFLE_BUFFER = 10_000

# In-memory caching of training data (`choose_cache`). VTAB caches every training set of up to
# 150,000 examples, as encoded bytes (task_adaptation/data/base.py, _cache_data_if_possible);
# here the bound is on bytes, since the paper's datasets range from 3 KB (CIFAR, decoded) to
# 0.5 MB (Oxford Pets, decoded) per image: decoded when the decoded images fit in
# DECODED_CACHE_MAX_BYTES (later epochs then skip JPEG decoding), else encoded when the
# encoded bytes fit in ENCODED_CACHE_MAX_BYTES (later epochs skip reading), else not at all.
CACHE_ENCODED = "encoded"
CACHE_DECODED = "decoded"
CACHE_MODES = (CACHE_ENCODED, CACHE_DECODED)
DECODED_CACHE_MAX_BYTES = 1 << 30
ENCODED_CACHE_MAX_BYTES = 2 << 30


def make_pipeline(ds: tf.data.Dataset, *, image_size: int,
                  preprocess_fn: Callable[[tf.Tensor], tf.Tensor], batch_size: int,
                  training: bool, seed: int = 0, cache: Optional[str] = None,
                  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, repeat: bool = False,
                  drop_remainder: bool = False,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  start_batch: int = 0,
                  eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING,
                  fast_decode: bool = False,
                  resize_on_device: bool = False) -> tf.data.Dataset:
  """Turns encoded examples into batches of (images, labels).

  Under `strategy.distribute_datasets_from_function`, call it inside the dataset function
  with that function's `input_context`: each input pipeline then reads its own shard and
  `batch_size` (the global batch) becomes the per-replica batch. Without `input_context`
  the batches are of `batch_size` (e.g. for `strategy.experimental_distribute_dataset`).

  Args:
    ds: dataset of {"image": encoded bytes, "label": int64 [] or float32 [C]}.
    image_size: side of the square images the backbone takes.
    preprocess_fn: float32 RGB [0, 255] -> the backbone's input (preprocessing.py).
    batch_size: global batch size.
    training: random-resized crop + flip and shuffling; otherwise resize + central crop.
    seed: seeds the shuffle and the augmentation.
    cache: None, or cache in memory (for datasets that fit, see `choose_cache`) the
      encoded bytes (`CACHE_ENCODED`) or the decoded images (`CACHE_DECODED`). Either gives
      the same batches as no cache.
    shuffle_buffer: shuffle buffer size, in examples (training only); a repeated stream
      permutes windows of this many examples (a whole epoch when it fits).
    repeat: repeat forever (after shuffling, reshuffled each epoch). Prefer it for
      multi-epoch training: augmentation seeds follow the position in the stream, which
      restarts when a non-repeated dataset is iterated again (the reshuffle then still pairs
      each example with a new position, unless the buffer is tiny). A repeated training
      stream's order and augmentation are a function of (seed, position) alone.
    drop_remainder: drop the last partial batch (static batch shapes).
    input_context: a `tf.distribute.InputContext`, to shard and batch per replica.
    start_batch: a repeated training stream starts at this batch, with the order and
      augmentation it has there (to resume training); needs `training` and `repeat`.
    eval_preprocessing: the evaluation resize and crop (`crops.EVAL_PREPROCESSINGS`).
    fast_decode: decode JPEGs by the fast path (`transforms.fast_jpeg_window`). A decoded
      cache would skip it, so with `fast_decode` a `CACHE_DECODED` request caches the
      encoded bytes instead (the batches stay those of no cache).
    resize_on_device: evaluation only: the host decodes each image's window
      (`transforms.eval_window`, the bilinear fast path's) and stops there; the batches are
      then of (uint8 canvases [B, C, C, 3], int32 meta [B, 3]), which
      `device_resample.inputs_fn(image_size, preprocess_fn)` turns into the backbone's
      input inside the compiled forward function (`preprocess_fn` is applied there).

  Returns:
    Dataset of (float32 [B, S, S, 3], labels [B] int64 or [B, C] float32); with
    `resize_on_device`, of ((canvases, meta), labels).

  Raises:
    ValueError: `start_batch` without `training` and `repeat`, an empty dataset, or
      `resize_on_device` with `training` or a decoded cache.
  """
  if start_batch and not (training and repeat):
    raise ValueError(f"start_batch={start_batch} resumes a repeated training stream; pass "
                     f"training=True and repeat=True.")
  if resize_on_device and (training or cache == CACHE_DECODED):
    raise ValueError("resize_on_device is for evaluation batches of encoded images "
                     "(training=False, no decoded cache).")
  pipeline_id = 0
  # 1. Encoded bytes; each input pipeline of a distributed job reads its own shard.
  if input_context is not None:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    pipeline_id = input_context.input_pipeline_id
  # 2. Cache a small dataset, before any randomness, so epochs differ: decoded images (decoded
  # once, here) or encoded bytes.
  if cache is not None and cache not in CACHE_MODES:
    raise ValueError(f"cache={cache!r}: expected None or one of {CACHE_MODES}.")
  cache = applied_cache(cache, fast_decode=fast_decode)
  decoded = cache == CACHE_DECODED
  if decoded:
    ds = ds.map(lambda ex: {**ex, "image": decode_rgb(ex["image"])},
                num_parallel_calls=tf.data.AUTOTUNE)
  if cache:
    ds = ds.cache()
  # 3. Shuffle (training), then repeat so that every epoch has its own order. A repeated
  # training stream is built epoch by epoch, each permuted statelessly from (seed, epoch),
  # not by `shuffle`'s reseeding, whose state carries over from earlier iterators and
  # depends on TensorFlow's global seed: the order at a position must not depend on what ran
  # before, so that a resumed run sees the data an uninterrupted one would have.
  position = 0
  if training and repeat:
    position = start_batch * batch_size
    # Counting a cached dataset fills its cache: the source is still read once.
    first_epoch, offset = divmod(position, _num_examples(ds, count=position > 0 or bool(cache)))
    ds = _epoch_stream(ds, first_epoch, tf.constant([seed, pipeline_id], tf.int64),
                       shuffle_buffer).skip(offset)
  elif training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  elif repeat:
    ds = ds.repeat()
  # 4. Decode (unless cached decoded) + preprocess in parallel (order kept, so runs are
  # reproducible).
  if training:
    train_fn = make_train_fn(image_size, preprocess_fn, decoded=decoded,
                             fast_decode=fast_decode)
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def augment(position, example):
      element_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
      return train_fn(example["image"], element_seed), example["label"]

    ds = ds.enumerate(start=position).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  elif resize_on_device:
    ds = ds.map(lambda ex: (eval_window(ex["image"], image_size,
                                        eval_preprocessing=eval_preprocessing), ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE)
  else:
    eval_fn = make_eval_fn(image_size, preprocess_fn, decoded=decoded,
                           eval_preprocessing=eval_preprocessing, fast_decode=fast_decode)
    ds = ds.map(lambda ex: (eval_fn(ex["image"]), ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE)
  # 5. Batch (windows padded into canvases: the copy batching makes anyway).
  if resize_on_device:
    ds = ds.padded_batch(batch_size, padded_shapes=_window_shapes(image_size, ds),
                         drop_remainder=drop_remainder)
  else:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  # 6. Prefetch; the pipeline's threads are its own, one per core this process may use (a
  # --parallel_trials worker's share: threads.py).
  return ds.prefetch(tf.data.AUTOTUNE).with_options(cpu_share_options())


def _window_shapes(image_size: int, ds: tf.data.Dataset):
  """`padded_batch`'s shapes for ((window, meta), label) elements: windows padded to
  canvases (`transforms.canvas_size`), the rest as they are."""
  side = transforms.canvas_size(image_size)
  label_shape = ds.element_spec[1].shape
  return ((tf.TensorShape([side, side, 3]), tf.TensorShape([3])), label_shape)


def applied_cache(cache: Optional[str], *, fast_decode: bool) -> Optional[str]:
  """The cache `make_pipeline` applies when asked for `cache`: with `fast_decode` a decoded
  cache would skip the fast path, so the encoded bytes are cached instead."""
  return CACHE_ENCODED if fast_decode and cache == CACHE_DECODED else cache


def cpu_share_options() -> tf.data.Options:
  """A private thread pool of `threads.usable_cpus()` threads."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads.usable_cpus()
  return options


def _epoch_stream(ds: tf.data.Dataset, first_epoch: int, seed: tf.Tensor,
                  window: int) -> tf.data.Dataset:
  """Data epochs first_epoch, first_epoch + 1, ... of `ds`, each shuffled statelessly from
  (seed, epoch): every run of `window` consecutive examples (the shuffle buffer's size; the
  whole epoch when it fits) is permuted uniformly. Stateless ops, so the order depends on
  nothing else (not on TensorFlow's global seed, nor on streams made before)."""
  def one_epoch(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch)

    def permute(index, examples):
      size = tf.shape(tf.nest.flatten(examples)[0])[0]
      order = tf.random.experimental.stateless_shuffle(
          tf.range(size), seed=tf.random.experimental.stateless_fold_in(epoch_seed, index))
      return tf.nest.map_structure(lambda values: tf.gather(values, order), examples)

    # Ragged windows: decoded images (a `CACHE_DECODED` stream) differ in shape.
    return ds.ragged_batch(window).enumerate().map(permute).unbatch().map(_dense)
  return tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(one_epoch)


def _dense(example):
  return tf.nest.map_structure(
      lambda value: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value, example)


def _num_examples(ds: tf.data.Dataset, *, count: bool) -> int:
  """The examples in one pass of `ds`, counted (encoded, not decoded) if tf.data cannot tell
  and `count`; else at least 1.

  Raises:
    ValueError: `ds` is empty (a stream of its epochs would never yield).
  """
  size = int(ds.cardinality())
  if size < 0:
    size = int((ds if count else ds.take(1)).reduce(tf.constant(0, tf.int64),
                                                    lambda n, _: n + 1))
  if size == 0:
    raise ValueError("Cannot make a repeated training stream of an empty dataset.")
  return size


def make_shared_eval_pipeline(ds: tf.data.Dataset, *, image_size: int,
                              preprocess_fns: Mapping[str, Callable[[tf.Tensor], tf.Tensor]],
                              batch_size: int,
                              eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING,
                              fast_decode: bool = False,
                              resize_on_device: bool = False) -> tf.data.Dataset:
  """Evaluation batches for several backbones of one resolution from one decode per image.

  Each image is decoded, resized and centrally cropped once (`eval_image`), then given to
  every function of `preprocess_fns`: the values are those `make_pipeline(training=False)`
  gives with that function, the decoding cost is paid once.

  Args:
    ds: dataset of {"image": encoded bytes, "label": int64 [] or float32 [C]}.
    image_size: side of the square images every backbone takes.
    preprocess_fns: name -> float32 RGB [0, 255] -> a backbone's input (one per input
      convention; backbones that share one share its images).
    batch_size: batch size.
    eval_preprocessing, fast_decode, resize_on_device: as for `make_pipeline`.

  Returns:
    Dataset of ({name: float32 [B, S, S, 3]}, labels), in the order of `ds`; with
    `resize_on_device`, every name maps to the same (canvases, meta) batch (each backbone's
    `preprocess_fn` then runs on the accelerator: `device_resample.inputs_fn`).
  """
  if resize_on_device:
    windows = make_pipeline(ds, image_size=image_size, preprocess_fn=lambda images: images,
                            batch_size=batch_size, training=False,
                            eval_preprocessing=eval_preprocessing, resize_on_device=True)
    return windows.map(lambda batch, labels: ({name: batch for name in preprocess_fns},
                                              labels))

  def convert(example):
    image = eval_image(example["image"], image_size, eval_preprocessing=eval_preprocessing,
                       fast_decode=fast_decode)
    return {name: fn(image) for name, fn in preprocess_fns.items()}, example["label"]

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(cpu_share_options())


def measure_bytes(ds: tf.data.Dataset) -> tuple[int, int]:
  """(encoded bytes, decoded uint8 RGB bytes) of a dataset of encoded examples.

  One pass over the encoded bytes: JPEG sizes come from their headers, other formats (PNG,
  GIF, BMP, WebP: small or rare in these datasets) are decoded.
  """
  def sizes(example):
    encoded = example["image"]
    height_width = tf.cond(tf.io.is_jpeg(encoded),
                           lambda: tf.image.extract_jpeg_shape(encoded)[:2],
                           lambda: tf.shape(decode_rgb(encoded))[:2])
    pixels = tf.reduce_prod(tf.cast(height_width, tf.int64))
    return tf.cast(tf.strings.length(encoded), tf.int64), 3 * pixels

  total = ds.map(sizes, num_parallel_calls=tf.data.AUTOTUNE).reduce(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
      lambda acc, size: (acc[0] + size[0], acc[1] + size[1]))
  return int(total[0]), int(total[1])


def choose_cache(*, encoded_bytes: int, decoded_bytes: int) -> Optional[str]:
  """How to cache a training split in memory: `CACHE_DECODED` when its decoded images fit in
  `DECODED_CACHE_MAX_BYTES`, else `CACHE_ENCODED` when its encoded bytes fit in
  `ENCODED_CACHE_MAX_BYTES`, else None (read and decode every epoch)."""
  if decoded_bytes <= DECODED_CACHE_MAX_BYTES:
    return CACHE_DECODED
  if encoded_bytes <= ENCODED_CACHE_MAX_BYTES:
    return CACHE_ENCODED
  return None


def fits_evaluation_cache(*, num_examples: int, image_size: int) -> bool:
  """Whether a split's evaluation batches, preprocessed (float32 images), fit in memory
  within `DECODED_CACHE_MAX_BYTES`: then a cell that evaluates the split more than once
  (each trial's validation pass) keeps them (`CellContext.evaluation_batches`), since
  evaluation preprocessing is deterministic. Their size is known without reading them."""
  return num_examples * image_size * image_size * 3 * 4 <= DECODED_CACHE_MAX_BYTES
