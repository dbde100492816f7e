"""The input pipeline: encoded images + labels -> batches of preprocessed images.

`make_pipeline` is the one core. It takes any `tf.data.Dataset` of
{"image": encoded bytes (tf.string), "label": int64 scalar or float32 multi-hot [C]}
(from `loading.load_splits`, an image folder, or `from_tensor_slices` in a test) and applies,
in this fixed order:
  1. read encoded bytes (sharded per input pipeline under `tf.distribute`);
  2. cache the encoded bytes (only when asked: for datasets that fit in memory);
  3. shuffle (training only, seeded);
  4. decode + preprocess, in parallel:
       - any encoding or colour mode (grayscale, RGBA, palette, CMYK JPEG, 16-bit PNG, GIF,
         BMP, WebP) -> uint8 RGB;
       - training: Inception-style random-resized crop (area 8%-100%, aspect 3/4-4/3),
         resize to image_size, random horizontal flip; randomness is stateless, seeded by
         (seed, input pipeline, position in the stream), so a run is reproducible;
       - evaluation / feature extraction: resize the shorter side to
         round(image_size / EVAL_CROP_FRACTION) then take the central image_size square
         (crop fraction 0.875, as Inception and ResNet evaluation: 256 -> 224);
       - float32 [0, 255] -> the backbone's own `preprocess_fn`;
  5. batch;
  6. prefetch.
Resizing is bilinear with antialiasing.
"""

from typing import Callable, Optional

import tensorflow as tf

EVAL_CROP_FRACTION = 0.875
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MAX_ATTEMPTS = 10
DEFAULT_SHUFFLE_BUFFER = 10_000


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP/WebP bytes, any colour mode -> uint8 [H, W, 3] RGB.

  Grayscale is replicated, alpha dropped, CMYK converted by libjpeg, 16-bit scaled to 8-bit,
  and only the first frame of an animation is kept. JPEGs use the accurate integer IDCT
  (the same pixels as PIL), not TF's default fast one.
  """
  def decode_jpeg():
    return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

  def decode_any():
    return tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)

  image = tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_any)
  image.set_shape([None, None, 3])
  return image


def _resize(image, size):
  return tf.image.resize(image, size, method="bilinear", antialias=True)


def resize_central_crop(image: tf.Tensor, image_size: int, *,
                        crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
  """Evaluation transform: shorter side to round(image_size / crop_fraction), central crop.

  Args:
    image: [H, W, 3] image, any dtype.
    image_size: side of the square output.
    crop_fraction: share of the resized shorter side kept.

  Returns:
    float32 [image_size, image_size, 3], values in the input's range.
  """
  input_shape = tf.shape(image)[:2]
  shape = tf.cast(input_shape, tf.float64)
  shorter_side = float(round(image_size / crop_fraction))
  scaled = tf.cast(tf.round(shape * (shorter_side / tf.reduce_min(shape))), tf.int32)
  offset = (scaled - image_size) // 2  # Top, left of the crop in the scaled image.
  # Resample straight into the central window: the kernel `tf.image.resize` runs (bilinear,
  # antialiased), with the same scale, shifted by the crop offset. Each output pixel depends
  # only on its position in the scaled image, so these are the pixels of resize-then-crop,
  # without computing the ~40% of the scaled image that the crop drops.
  image = tf.raw_ops.ScaleAndTranslate(
      images=image[None], size=[image_size, image_size],
      scale=tf.cast(scaled, tf.float32) / tf.cast(input_shape, tf.float32),
      translation=-tf.cast(offset, tf.float32), kernel_type="triangle", antialias=True)[0]
  image.set_shape([image_size, image_size, 3])
  return image


def random_resized_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Training transform: Inception-style random crop resized to a square.

  Args:
    image: [H, W, 3] image.
    image_size: side of the square output.
    seed: stateless seed, int [2].

  Returns:
    float32 [image_size, image_size, 3].
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT_RANGE,
      area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, crop_size)
  image = _resize(image, [image_size, image_size])
  image.set_shape([image_size, image_size, 3])
  return image


def make_eval_fn(image_size: int, preprocess_fn: Callable[[tf.Tensor], tf.Tensor]):
  """encoded bytes -> preprocessed float32 [S, S, 3], no augmentation."""
  def eval_fn(encoded):
    image = resize_central_crop(decode_rgb(encoded), image_size)
    return preprocess_fn(tf.clip_by_value(image, 0.0, 255.0))
  return eval_fn


def make_train_fn(image_size: int, preprocess_fn: Callable[[tf.Tensor], tf.Tensor]):
  """(encoded bytes, stateless seed [2]) -> augmented, preprocessed float32 [S, S, 3]."""
  def train_fn(encoded, seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(decode_rgb(encoded), image_size, crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return preprocess_fn(tf.clip_by_value(image, 0.0, 255.0))
  return train_fn


def make_pipeline(ds: tf.data.Dataset, *, image_size: int,
                  preprocess_fn: Callable[[tf.Tensor], tf.Tensor], batch_size: int,
                  training: bool, seed: int = 0, cache: bool = False,
                  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, repeat: bool = False,
                  drop_remainder: bool = False,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
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
    cache: cache the encoded bytes in memory (for datasets that fit).
    shuffle_buffer: shuffle buffer size, in examples (training only).
    repeat: repeat forever (after shuffling, reshuffled each epoch). Prefer it for
      multi-epoch training: augmentation seeds follow the position in the stream, which
      restarts when a non-repeated dataset is iterated again (the reshuffle then still pairs
      each example with a new position, unless the buffer is tiny).
    drop_remainder: drop the last partial batch (static batch shapes).
    input_context: a `tf.distribute.InputContext`, to shard and batch per replica.

  Returns:
    Dataset of (float32 [B, S, S, 3], labels [B] int64 or [B, C] float32).
  """
  pipeline_id = 0
  # 1. Encoded bytes; each input pipeline of a distributed job reads its own shard.
  if input_context is not None:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    pipeline_id = input_context.input_pipeline_id
  # 2. Cache the small encoded bytes, before any randomness, so epochs differ.
  if cache:
    ds = ds.cache()
  # 3. Shuffle (training), then repeat so that every epoch has its own order.
  if training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  # 4. Decode + preprocess in parallel (order kept, so runs are reproducible).
  if training:
    train_fn = make_train_fn(image_size, preprocess_fn)
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def augment(position, example):
      element_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
      return train_fn(example["image"], element_seed), example["label"]

    ds = ds.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    eval_fn = make_eval_fn(image_size, preprocess_fn)
    ds = ds.map(lambda ex: (eval_fn(ex["image"]), ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE)
  # 5. Batch.
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  # 6. Prefetch.
  return ds.prefetch(tf.data.AUTOTUNE)
