"""The backbone zoo: the paper's 16 ImageNet networks, plus user `hub:` and `keras:` models.

Every fact about a network (where it comes from, its resolution, input convention, feature
size, the paper's ImageNet top-1 and the published top-1 of the checkpoint we load) lives in
its `BackboneSpec`. `build_backbone` turns a spec
and a weights choice into a Keras 3 layer that maps preprocessed images to pooled
penultimate features.
"""

import dataclasses
import importlib
import inspect
import json
import os
from typing import Any, Mapping, Optional

from tfhub_transfer import columns
from tfhub_transfer.config import FrozenKwargs
from tfhub_transfer.regimes import IMAGENET
from tfhub_transfer.regimes import RANDOM

# Keras and TF Hub (so TensorFlow) are imported by the functions that build a network, so the
# registry itself (listing, checking names) is quick to import.

KERAS = "keras"
HUB = "hub"
BUILT = "built"  # Our own Keras architecture, built by the spec's `builder`.


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """One ImageNet network.

  Attributes:
    name: registry name.
    source: `keras` (keras.applications), `hub` (TF Hub feature vector) or `built` (our own
      Keras architecture, made by `builder`, for a network with no TF2 release).
    image_size: native ImageNet resolution (square).
    preprocessing: input convention, a key of `preprocessing.PREPROCESSING` or
      `keras.applications.<module>`.
    feature_dim: size of the pooled penultimate features (None: known once built).
    paper_top1: ImageNet top-1 (%) of the paper's retrained network (None for user models).
    checkpoint_top1: the published ImageNet top-1 (%) of the checkpoint `--weights=imagenet`
      loads, which is what a result measures (None: none published or none loaded).
    checkpoint_top1_source: where `checkpoint_top1` is published.
    keras_app: keras.applications constructor name (source `keras`).
    keras_kwargs: extra constructor kwargs.
    hub_handle: TF Hub handle or SavedModel dir (source `hub`).
    note: provenance or availability, shown in listings and errors.
    builder: "module:function" that builds the network (source `built`), called as
      `function(spec, weights=..., seed=...)`; it owns what `imagenet` and a path mean.
  """
  name: str
  source: str
  image_size: int
  preprocessing: str
  feature_dim: Optional[int]
  paper_top1: Optional[float] = None
  keras_app: Optional[str] = None
  keras_kwargs: FrozenKwargs = FrozenKwargs()
  hub_handle: Optional[str] = None
  note: str = ""
  builder: Optional[str] = None
  checkpoint_top1: Optional[float] = None
  checkpoint_top1_source: str = ""

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON values (the feature cache keys on them; kwargs as sorted JSON text, the
    form the keys have always had, so existing cache entries stay valid). The published
    top-1 describes the checkpoint, it does not change it: left out of the key."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in ("checkpoint_top1", "checkpoint_top1_source")}
    out["keras_kwargs"] = json.dumps(self.keras_kwargs.to_dict(), sort_keys=True)
    if self.builder is None:  # Added later: absent where unset, so older keys still match.
      del out["builder"]
    return out

  def get_builder(self):
    """The `builder` function (imports its module, so TensorFlow)."""
    module, function = self.builder.split(":")
    return getattr(importlib.import_module(module), function)


def _keras(name, app, size, prep, dim, top1, note="", checkpoint=(None, ""), **kwargs):
  return BackboneSpec(name=name, source=KERAS, image_size=size, preprocessing=prep,
                      feature_dim=dim, paper_top1=top1, keras_app=app,
                      keras_kwargs=FrozenKwargs(kwargs), note=note,
                      checkpoint_top1=checkpoint[0], checkpoint_top1_source=checkpoint[1])


def _hub(name, handle, size, dim, top1, note="", checkpoint=(None, "")):
  return BackboneSpec(name=name, source=HUB, image_size=size, preprocessing="unit",
                      feature_dim=dim, paper_top1=top1, hub_handle=handle, note=note,
                      checkpoint_top1=checkpoint[0], checkpoint_top1_source=checkpoint[1])


# Where the published top-1 of the checkpoints we load comes from.
_KERAS_TABLE = ("keras.io/api/applications, 'Available models' table (top-1 on the ImageNet "
                "validation set)")
_SLIM_TABLE = ("TF-Slim pre-trained models table, github.com/tensorflow/models "
               "research/slim/README.md, checkpoint {}")


def _keras_top1(top1):
  return top1, _KERAS_TABLE


def _slim_hub_top1(top1, checkpoint):
  return top1, (_SLIM_TABLE.format(checkpoint) + "; the TF Hub model page says the module "
                "exports this TF-Slim checkpoint (the page itself not re-read offline)")


_TFHUB = "https://tfhub.dev/google/imagenet/{}/feature_vector/5"

# The paper's networks. `paper_top1` is the paper's (its Table A1 / Figure 1), which the
# authors measured on their own retrained checkpoints; `checkpoint_top1` is the published
# top-1 of the public checkpoint loaded here (e.g. ResNet-50: 76.9 vs 74.9).
BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in [
    _hub("inception_v1", _TFHUB.format("inception_v1"), 224, 1024, 73.65,
         "TF-slim Inception v1 (GoogLeNet) on TF Hub",
         checkpoint=_slim_hub_top1(69.8, "inception_v1_2016_08_28")),
    _hub("bn_inception", _TFHUB.format("inception_v2"), 224, 1024, 75.3,
         "TF-slim 'Inception v2', i.e. BN-Inception, on TF Hub",
         checkpoint=_slim_hub_top1(73.9, "inception_v2_2016_08_28")),
    _keras("inception_v3", "InceptionV3", 299, "inception", 2048, 78.63,
           checkpoint=_keras_top1(77.9)),
    BackboneSpec(
        name="inception_v4", source=BUILT, image_size=299, preprocessing="inception",
        feature_dim=1536, paper_top1=79.9, builder="tfhub_transfer.inception_v4:build_backbone",
        note=("no TF2 release: our Keras port of the TF-slim network; ImageNet weights from "
              "the slim checkpoint inception_v4_2016_09_09 (--weights=PATH/inception_v4.ckpt, "
              "or put it in the Keras cache for --weights=imagenet)"),
        checkpoint_top1=80.2,
        checkpoint_top1_source=_SLIM_TABLE.format("inception_v4_2016_09_09")),
    _keras("inception_resnet_v2", "InceptionResNetV2", 299, "inception", 1536, 80.25,
           checkpoint=_keras_top1(80.3)),
    _keras("resnet_50", "ResNet50", 224, "caffe", 2048, 76.9, "ResNet v1, as in the paper",
           checkpoint=_keras_top1(74.9)),
    _keras("resnet_101", "ResNet101", 224, "caffe", 2048, 78.56, "ResNet v1",
           checkpoint=_keras_top1(76.4)),
    _keras("resnet_152", "ResNet152", 224, "caffe", 2048, 79.3, "ResNet v1",
           checkpoint=_keras_top1(76.6)),
    _keras("densenet_121", "DenseNet121", 224, "torch", 1024, 75.6,
           checkpoint=_keras_top1(75.0)),
    _keras("densenet_169", "DenseNet169", 224, "torch", 1664, 76.75,
           checkpoint=_keras_top1(76.2)),
    _keras("densenet_201", "DenseNet201", 224, "torch", 1920, 77.1,
           checkpoint=_keras_top1(77.3)),
    _keras("mobilenet_v1", "MobileNet", 224, "inception", 1024, 72.4,
           checkpoint=_keras_top1(70.4)),
    _keras("mobilenet_v2", "MobileNetV2", 224, "inception", 1280, 71.7,
           checkpoint=_keras_top1(71.3)),
    # keras.io lists MobileNetV2 at alpha 1.0 only; Keras translated its MobileNetV2 weights
    # from the TF-Slim checkpoints, whose table gives alpha 1.4.
    _keras("mobilenet_v2_140", "MobileNetV2", 224, "inception", 1792, 74.7, alpha=1.4,
           checkpoint=(75.0, "TF-Slim MobileNet v2 table, github.com/tensorflow/models "
                             "research/slim/nets/mobilenet/README.md, mobilenet_v2_1.4_224 "
                             "(Keras' MobileNetV2 weights are translated from these "
                             "checkpoints, per keras-applications' mobilenet_v2 docstring)")),
    _keras("nasnet_mobile", "NASNetMobile", 224, "inception", 1056, 73.6,
           checkpoint=_keras_top1(74.4)),
    _keras("nasnet_large", "NASNetLarge", 331, "inception", 4032, 80.77,
           checkpoint=_keras_top1(82.5)),
]}

HUB_PREFIX = "hub:"
KERAS_PREFIX = "keras:"


def _keras_app_module(app: str) -> str:
  """The keras.applications submodule that defines `app` (for its preprocess_input)."""
  import keras  # pylint: disable=g-import-not-at-top
  for module_name in dir(keras.applications):
    module = getattr(keras.applications, module_name)
    if (not module_name.startswith("_") and hasattr(module, "preprocess_input")
        and hasattr(module, app)):
      return module_name
  raise ValueError(f"Unknown Keras application {app!r} in --model=keras:{app}. Expected a "
                   f"constructor of keras.applications, e.g. "
                   f"{sorted(n for n in dir(keras.applications) if n[0].isupper())}.")


def get_backbone_spec(model: str, *, model_kwargs: Optional[Mapping[str, Any]] = None,
                      image_size: Optional[int] = None) -> BackboneSpec:
  """Resolves a `--model` value to a spec.

  Args:
    model: a registry name, `hub:<handle or SavedModel dir>` or `keras:<Application>`.
    model_kwargs: extra keras.applications constructor kwargs (overrides the spec's).
    image_size: overrides the native resolution.

  Returns:
    The spec, with overrides applied.

  Raises:
    ValueError: the name is not in the registry and has no known prefix.
  """
  model_kwargs = FrozenKwargs(model_kwargs or {})
  if model.startswith(HUB_PREFIX):
    handle = model[len(HUB_PREFIX):]
    if model_kwargs:
      raise ValueError(f"--model_kwargs={model_kwargs.json()} only applies to keras: "
                       f"models; a Hub module ({handle}) takes no constructor arguments.")
    spec = _hub(model, handle, image_size or 224, None, None, "user TF Hub module")
  elif model.startswith(KERAS_PREFIX):
    app = model[len(KERAS_PREFIX):]
    spec = _keras(model, app, 224, "keras.applications." + _keras_app_module(app), None,
                  None, "user keras.applications model", **model_kwargs)
  elif model in BACKBONES:
    spec = BACKBONES[model]
    if model_kwargs:  # Another network than the published checkpoint's.
      spec = dataclasses.replace(spec, feature_dim=None, keras_kwargs=FrozenKwargs(
          {**spec.keras_kwargs, **model_kwargs}), checkpoint_top1=None,
                                 checkpoint_top1_source="")
  else:
    raise ValueError(
        f"Unknown --model={model!r}. Valid choices: {', '.join(BACKBONES)}; or "
        f"'hub:<handle or SavedModel dir>' or 'keras:<Application>' (e.g. keras:MobileNet).")
  if image_size and image_size != spec.image_size:
    # The published top-1 was measured at the native resolution.
    spec = dataclasses.replace(spec, image_size=image_size, checkpoint_top1=None,
                               checkpoint_top1_source="")
  return spec


def weights_path_exists(weights: str) -> bool:
  """Whether a --weights path names something: a file, a directory, or a TF2 checkpoint,
  which is named by its prefix (PATH.index exists, PATH does not)."""
  return os.path.exists(weights) or os.path.exists(weights + ".index")


def savedmodel_weights(weights: str) -> str:
  """The SavedModel directory `weights` names, which is then the network itself
  (`build_backbone` loads it in place of the spec's), else ''."""
  is_path = weights not in (IMAGENET, RANDOM)
  return weights if is_path and os.path.isdir(weights) else ""


# What a --weights path can hold, told apart by its header (`weights_format`).
SAVED_MODEL = "SavedModel directory"
KERAS_FILE = "Keras weights file"
TF_CHECKPOINT = "TF checkpoint"
# The names Keras' `load_weights` reads (it picks the reader by the name).
KERAS_WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # At 0, or after a user block of 512 * 2^k bytes.
_ZIP_MAGIC = b"PK\x03\x04"  # A `.keras` archive.
# A TF checkpoint's PATH.index is a LevelDB-format table: its last 8 bytes are this number.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_WEIGHTS_CHOICES = ("pass imagenet, random, a Keras weights file (.weights.h5, .h5, .keras), "
                    "a SavedModel directory or a TF checkpoint prefix")


def weights_format(path: str) -> str:
  """What a --weights path holds, read from its header before any work (TF-free).

  Returns:
    `SAVED_MODEL`, `KERAS_FILE` or `TF_CHECKPOINT`.

  Raises:
    ValueError: the path does not exist, or holds none of them (one line saying what).
  """
  if os.path.isdir(path):
    if any(os.path.isfile(os.path.join(path, name))
           for name in ("saved_model.pb", "saved_model.pbtxt")):
      return SAVED_MODEL
    raise ValueError(f"a directory without saved_model.pb, so not a SavedModel; "
                     f"{_WEIGHTS_CHOICES}")
  if not os.path.isfile(path):
    index = path + ".index"
    if not os.path.isfile(index):
      raise ValueError(f"no such file or directory; {_WEIGHTS_CHOICES}")
    with open(index, "rb") as f:
      f.seek(max(0, os.path.getsize(index) - len(_TABLE_MAGIC)))
      if f.read() != _TABLE_MAGIC:
        raise ValueError(f"{index} is not a TF checkpoint index (no table footer); "
                         f"{_WEIGHTS_CHOICES}")
    return TF_CHECKPOINT
  with open(path, "rb") as f:
    head = f.read(2048 + len(_HDF5_MAGIC))
  is_hdf5 = any(head[at:at + len(_HDF5_MAGIC)] == _HDF5_MAGIC for at in (0, 512, 1024, 2048))
  if is_hdf5 or (head.startswith(_ZIP_MAGIC) and path.endswith(".keras")):
    if not path.endswith(KERAS_WEIGHTS_SUFFIXES):
      raise ValueError(f"a Keras weights file must be named *{', *'.join(KERAS_WEIGHTS_SUFFIXES)}"
                       f" (Keras picks its reader by the name); rename it")
    return KERAS_FILE
  what = "an empty file" if not head else f"a file starting with {head[:8]!r}"
  raise ValueError(f"{what}, neither HDF5 nor a .keras archive; {_WEIGHTS_CHOICES}")


# Arguments `build_backbone` sets itself: the backbone is always headless and pooled.
_RESERVED_KWARGS = ("include_top", "weights", "input_shape", "input_tensor", "pooling")


def check_backbone(model: str, *, model_kwargs: Optional[Mapping[str, Any]] = None,
                   image_size: int = 0, weights: Optional[str] = None,
                   build: bool = True) -> BackboneSpec:
  """Checks before any cell runs that `model` can be built as asked; returns its spec.

  The weights path must hold what this network reads (`weights_format`). A keras.applications
  network given kwargs or a resolution has its kwargs checked against the constructor's
  signature (names, and a value of the kind its default has), then is built once without
  weights, so a resolution it refuses ("at least 32x32") is refused here; `build=False`
  skips that part (it imports TensorFlow): the `--parallel_trials` launcher's children do it.

  Raises:
    ValueError: one line naming the flag and what it accepts.
  """
  spec = get_backbone_spec(model, model_kwargs=model_kwargs, image_size=image_size or None)
  if weights and weights not in (IMAGENET, RANDOM):
    try:
      kind = weights_format(weights)
    except ValueError as e:
      raise ValueError(f"--weights={weights}: {e}.") from e
    wanted = {KERAS: (KERAS_FILE, SAVED_MODEL), HUB: (SAVED_MODEL,),
              BUILT: (TF_CHECKPOINT, SAVED_MODEL)}[spec.source]
    if kind not in wanted:
      raise ValueError(f"--weights={weights} is a {kind}, but --model={model} reads a "
                       f"{' or a '.join(wanted)}.")
  if spec.source == BUILT and spec.keras_kwargs:
    raise ValueError(f"--model_kwargs={spec.keras_kwargs.json()} only applies to keras: "
                     f"models; --model={model} takes no constructor arguments.")
  if spec.source != KERAS or not (model_kwargs or image_size) or not build:
    return spec
  import keras  # pylint: disable=g-import-not-at-top
  parameters = inspect.signature(getattr(keras.applications, spec.keras_app)).parameters
  accepted = [name for name in parameters if name not in _RESERVED_KWARGS]
  flag = f"--model_kwargs={FrozenKwargs(model_kwargs or {}).json()}"
  for name, value in (model_kwargs or {}).items():
    if name not in accepted:
      why = ("is set by tfhub_transfer (the backbone is headless and pooled)"
             if name in _RESERVED_KWARGS else "is not an argument")
      raise ValueError(f"{flag}: {name!r} {why} of keras.applications.{spec.keras_app}; it "
                       f"accepts {', '.join(accepted)}.")
    default = parameters[name].default
    if not _same_kind(value, default):
      raise ValueError(f"{flag}: {name}={value!r} for keras.applications."
                       f"{spec.keras_app} must be a {type(default).__name__} like its default "
                       f"{default!r}.")
  try:
    _build_keras_app(spec, weights=RANDOM, seed=0)
  except (ValueError, TypeError) as e:
    message = " ".join(str(e).split())
    raise ValueError(f"--model={model} with --model_kwargs={spec.keras_kwargs.json()} and "
                     f"--image_size={spec.image_size} does not build: {message}") from e
  return spec


def _same_kind(value, default) -> bool:
  """Whether a kwarg value is of the kind of the parameter's default (None: anything)."""
  if default is None or default is inspect.Parameter.empty:
    return True
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, (int, float)):
    return isinstance(value, (int, float))
  return isinstance(value, type(default))


def build_backbone(spec: BackboneSpec, *, weights: str, seed: int = 0):
  """Builds the feature extractor: preprocessed images [B, S, S, 3] -> features [B, D].

  Args:
    spec: the network.
    weights: `imagenet`, `random`, or a path (Keras weights file, SavedModel dir, or for a
      `built` network what its builder reads, e.g. a TF checkpoint).
    seed: seed of the random init.

  Returns:
    A Keras 3 layer (a functional model for keras.applications and `built` networks, a
    `HubModule` for Hub).

  Raises:
    ValueError: the weights do not fit the network.
    FileNotFoundError: pretrained weights are neither cached nor downloadable.
  """
  from tfhub_transfer import hub_layer  # pylint: disable=g-import-not-at-top
  is_path = weights not in (IMAGENET, RANDOM)
  if is_path and not weights_path_exists(weights):
    raise FileNotFoundError(f"--weights={weights!r}: no such file or directory. Pass "
                            f"'imagenet', 'random', a Keras weights file, a SavedModel dir or "
                            f"(for {', '.join(n for n, s in BACKBONES.items() if s.builder)}) "
                            f"a TF checkpoint.")
  if savedmodel_weights(weights):
    return hub_layer.HubModule(weights, name=f"{_safe(spec.name)}_backbone", seed=seed)
  if spec.source == BUILT:
    if spec.keras_kwargs:
      raise ValueError(f"--model_kwargs={spec.keras_kwargs.json()} only applies to keras: "
                       f"models; --model={spec.name} takes no constructor arguments.")
    model = spec.get_builder()(spec, weights=weights, seed=seed)
    model.name = f"{_safe(spec.name)}_backbone"
    return model
  if spec.source == HUB:
    if is_path:
      raise ValueError(f"--weights={weights!r} is a file, but {spec.name} is a TF Hub module: "
                       f"pass a SavedModel directory.")
    return hub_layer.HubModule(spec.hub_handle, random_init=weights == RANDOM, seed=seed,
                               name=f"{_safe(spec.name)}_backbone")
  return _build_keras_app(spec, weights=weights, seed=seed)


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name)


def _build_keras_app(spec, *, weights, seed):
  import keras  # pylint: disable=g-import-not-at-top
  constructor = getattr(keras.applications, spec.keras_app)
  keras.utils.set_random_seed(seed)
  kwargs = dict(include_top=False, pooling="avg",
                input_shape=(spec.image_size, spec.image_size, 3), **spec.keras_kwargs)
  if weights == IMAGENET:
    model = _with_offline_hint(constructor, spec, kwargs)
  else:
    model = constructor(weights=None, **kwargs)
    if weights != RANDOM:
      _load_weights_file(model, weights, spec)
  model.name = f"{_safe(spec.name)}_backbone"
  return model


def keras_models_dir() -> str:
  """Keras' cache of downloaded weights ($KERAS_HOME/models, by default ~/.keras/models)."""
  return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def _with_offline_hint(constructor, spec, kwargs):
  try:
    return constructor(weights=IMAGENET, **kwargs)
  except Exception as e:  # Keras raises a bare Exception for fetch failures.
    message = str(e)
    if "URL fetch failure" not in message and "fetch" not in message.lower():
      raise
    url = message.split(" on ", 1)[-1].split(" ")[0].rstrip(":")
    filename = url.rsplit("/", 1)[-1]
    cache = keras_models_dir()
    raise FileNotFoundError(
        f"ImageNet weights for --model={spec.name} are not cached and could not be "
        f"downloaded ({url}). Keras looked for {os.path.join(cache, filename)}: download "
        f"{filename} on a machine with network and copy it there (or set KERAS_HOME), or pass "
        f"--weights=PATH to that file.") from e


def _load_weights_file(model, path, spec):
  try:
    model.load_weights(path)
  except Exception as e:
    raise ValueError(f"--weights={path!r} does not fit --model={spec.name} "
                     f"({spec.keras_app}, kwargs {spec.keras_kwargs.json()}): {e}. A no-top Keras "
                     f"weights file for the same architecture and alpha is expected.") from e


def describe_source(spec: BackboneSpec) -> str:
  if spec.source == KERAS:
    kwargs = spec.keras_kwargs.json() if spec.keras_kwargs else ""
    return f"keras.applications.{spec.keras_app}{kwargs}"
  if spec.source == HUB:
    return spec.hub_handle
  return spec.builder.split(":")[0]  # Our module.


def format_models_table() -> str:
  """The zoo as a text table, for `--list_models`: the paper's top-1 (its retrained networks)
  and the published top-1 of the checkpoint `--weights=imagenet` loads."""
  rows = [("name", "source", "size", "feat dim", "paper top-1", "checkpoint top-1")]
  for spec in BACKBONES.values():
    rows.append((spec.name, describe_source(spec), str(spec.image_size),
                 str(spec.feature_dim), f"{spec.paper_top1:.2f}",
                 "-" if spec.checkpoint_top1 is None else f"{spec.checkpoint_top1:.1f}"))
  return columns.align(rows)
