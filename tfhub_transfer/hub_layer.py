"""TF Hub modules as Keras 3 layers.

`hub.KerasLayer` is a tf_keras (Keras 2) layer and cannot live in a Keras 3 model. `HubModule`
loads a reusable TF2 SavedModel with `hub.load` (a tfhub.dev/Kaggle handle, or a local
directory), wraps its variables as Keras variables (the same `tf.Variable` objects, not
copies) so `trainable` and optimizers see them, and passes `training` through to the module
so batch norm runs in training mode when fine-tuning.
"""

import hashlib
import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub


def hub_cache_dir() -> str:
  return os.environ.get("TFHUB_CACHE_DIR", os.path.join(
      os.environ.get("TMPDIR", "/tmp"), "tfhub_modules"))


def load_module(handle: str):
  """`hub.load` with an error that says where to put the module when offline."""
  try:
    return hub.load(handle)
  except (OSError, ValueError, tf.errors.OpError) as e:
    if os.path.isdir(handle):
      raise ValueError(f"{handle!r} is a directory but not a loadable SavedModel: {e}") from e
    cached = os.path.join(hub_cache_dir(), hashlib.sha1(handle.encode()).hexdigest())
    raise FileNotFoundError(
        f"Could not load TF Hub module {handle!r} ({type(e).__name__}: {e}). With no network, "
        f"download its archive elsewhere and extract it to {cached} (the TF Hub cache, "
        f"$TFHUB_CACHE_DIR), or to any folder and pass --weights=FOLDER or "
        f"--model=hub:FOLDER.") from e


class HubModule(keras.layers.Layer):
  """A reusable TF2 SavedModel (e.g. a TF Hub image feature vector) as a Keras 3 layer.

  Args:
    handle: TF Hub handle or SavedModel directory.
    trainable: whether the module's trainable variables are trained.
    random_init: re-initialize every variable (He-normal kernels, zero biases, unit batch-norm
      scales and variances) for training from scratch.
    seed: seed of the random init.
    output_key: for modules whose call returns a dict, the key of the pooled features.
    name: layer name.
  """

  def __init__(self, handle: str, *, trainable: bool = False, random_init: bool = False,
               seed: int = 0, output_key: Optional[str] = None, name: Optional[str] = None):
    # float32 whatever the default dtype policy: the SavedModel's functions take float32.
    super().__init__(trainable=trainable, name=name, dtype="float32")
    self.handle = handle
    self.output_key = output_key
    self._module = load_module(handle)
    self._is_tf1 = getattr(self._module, "_is_hub_module_v1", False)
    if self._is_tf1:
      self._fn = self._module.signatures["default"]
      variables = self._fn.variables if hasattr(self._fn, "variables") else []
    else:
      if not callable(self._module):
        raise ValueError(f"hub.load({handle!r}) returned a non-callable object: not a "
                         f"reusable SavedModel. Export it with a __call__ function.")
      self._fn = self._module
      if not hasattr(self._module, "variables"):
        raise ValueError(f"{handle!r} lacks the `variables` attribute of the Reusable "
                         f"SavedModel API (tensorflow.org/hub/reusable_saved_models).")
      variables = list(self._module.variables)
    if random_init:
      _reinitialize(variables, seed)
    trainable_refs = {v.ref() for v in getattr(self._module, "trainable_variables", [])}
    for v in variables:
      # Wrapping a tf.Variable in a Keras variable shares it (see keras' TF backend).
      self._track_variable(keras.Variable(v, trainable=v.ref() in trainable_refs,
                                          name=v.name.split(":")[0].replace("/", "_")))
    self.built = True

  @property
  def trainable(self):
    return self._trainable

  @trainable.setter
  def trainable(self, value):
    if value and getattr(self, "_is_tf1", False):
      raise ValueError(f"{self.handle!r} is a TF1 Hub module: it can only be used frozen "
                       f"(--regime=logreg). Use a TF2 SavedModel to fine-tune.")
    keras.layers.Layer.trainable.fset(self, value)

  def call(self, images, training=False):
    if self._is_tf1:
      outputs = self._fn(images=images)
    else:
      outputs = self._fn(images, training=bool(training) and self.trainable)
    if isinstance(outputs, dict):
      key = self.output_key or ("default" if "default" in outputs else None)
      if key not in outputs:
        raise ValueError(f"Hub module {self.handle!r} returns {sorted(outputs)}; pick the "
                         f"pooled features with output_key.")
      outputs = outputs[key]
    return outputs

  def compute_output_spec(self, images, training=False):
    out = self.call(tf.zeros((1,) + tuple(images.shape[1:]), images.dtype))
    return keras.KerasTensor((images.shape[0],) + tuple(out.shape[1:]), dtype=out.dtype)


def _reinitialize(variables, seed: int) -> None:
  """Random init by role, read from each variable's name and shape."""
  rng = np.random.default_rng(seed)
  for v in variables:
    name = v.name.lower()
    shape = v.shape.as_list()
    if "moving_variance" in name or "gamma" in name:
      value = np.ones(shape)
    elif len(shape) >= 2 and "beta" not in name:
      fan_in = int(np.prod(shape[:-1]))
      if "depthwise" in name:
        fan_in = int(np.prod(shape[:2]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    else:
      value = np.zeros(shape)
    v.assign(value.astype(v.dtype.as_numpy_dtype))
