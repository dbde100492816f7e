"""Input conventions of ImageNet backbones: pixels in [0, 255] -> what a network expects.

Every backbone spec names one of these conventions; the input pipeline applies it after
resize/crop, and the feature cache keys on its name. The functions are pure TensorFlow so they
run inside a `tf.data` map.
"""

import importlib
from typing import Callable

import tensorflow as tf

PreprocessFn = Callable[[tf.Tensor], tf.Tensor]

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _inception(images):
  """[0, 255] -> [-1, 1] (TF-slim Inception, MobileNet, NASNet)."""
  return images / 127.5 - 1.0


def _caffe(images):
  """RGB [0, 255] -> BGR minus the ImageNet mean (Keras ResNet v1, converted from Caffe)."""
  return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, images.dtype)


def _torch(images):
  """[0, 255] -> [0, 1] standardised by the ImageNet mean and std (Keras DenseNet)."""
  mean = tf.constant(_IMAGENET_MEAN_RGB, images.dtype)
  std = tf.constant(_IMAGENET_STD_RGB, images.dtype)
  return (images / 255.0 - mean) / std


def _unit(images):
  """[0, 255] -> [0, 1] (the TF Hub image-module convention)."""
  return images / 255.0


PREPROCESSING = {
    "inception": _inception,
    "caffe": _caffe,
    "torch": _torch,
    "unit": _unit,
}

_KERAS_PREFIX = "keras.applications."


def get_preprocess_fn(name: str) -> PreprocessFn:
  """Returns the function for a convention name.

  Args:
    name: a key of `PREPROCESSING`, or `keras.applications.<module>` for the
      `preprocess_input` of that keras.applications module (custom `keras:` backbones).

  Returns:
    A function mapping float32 RGB images in [0, 255] to the network's input.

  Raises:
    ValueError: the name is unknown.
  """
  if name in PREPROCESSING:
    return PREPROCESSING[name]
  if name.startswith(_KERAS_PREFIX):
    module = importlib.import_module("keras.applications." + name[len(_KERAS_PREFIX):])
    return lambda images: module.preprocess_input(images)
  raise ValueError(
      f"Unknown preprocessing {name!r}. Expected one of {sorted(PREPROCESSING)} or "
      f"'{_KERAS_PREFIX}<module>' (e.g. '{_KERAS_PREFIX}mobilenet').")
