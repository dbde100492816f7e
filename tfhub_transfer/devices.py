"""TensorFlow's start-up, the devices a run computes on, and what a result says about them.

- `prepare_environment`: what must be set before TensorFlow starts: GPU memory growth (by
  default TensorFlow maps almost all of every visible GPU's memory at start-up, so a parent
  process would starve the workers it launches). Called first by the CLI, the bench and
  their children; the user's own setting wins.
- `import_tensorflow_quietly`: imports TensorFlow, drops its known start-up lines, and
  returns the line naming the devices. Where an NVIDIA driver is present (`nvidia-smi` or
  /proc/driver/nvidia/version) the lines about loading CUDA are kept, and a run that sees
  no GPU says why and names the fix; the build's CUDA/cuDNN versions are logged, and a GPU
  whose compute capability has no machine code in the build is named (its kernels are
  JIT-compiled from PTX on first use, so a large CUDA_CACHE_MAXSIZE is set unless set).
- `resolve_strategy`: which strategy `--strategy` means on these devices, and the
  combinations refused before any work (a GPU strategy without a GPU; XLA on >1 replica).
- `provenance`: device kind, GPU name, TF32 setting and cuDNN version, for each record.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Iterator, Mapping, MutableMapping, Optional, Sequence

from tfhub_transfer.config import STRATEGIES

MEMORY_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
CUDA_CACHE_ENV = "CUDA_CACHE_MAXSIZE"
# CUDA's largest JIT cache (4 GiB): a PTX-only architecture compiles every kernel on first
# use, and a smaller cache evicts them (TensorFlow warns the JIT can take 30 minutes).
CUDA_CACHE_BYTES = str(4 * 2**30)
GPU_FIX = "pip install '.[gpu]' (TensorFlow's CUDA and cuDNN wheels; see docs/gpu.md)"
DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"

# The known start-up lines, with nothing to act on; anything else is passed through.
_TF_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin"
    r"|computation_placer\.cc:\d+\] .* already registered"
    r"|TF-TRT Warning: Could not find TensorRT")
# Lines about loading CUDA: noise without an NVIDIA driver, the diagnosis with one.
_CUDA_LOADING = re.compile(
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|Cannot dlopen some GPU libraries|Could not load dynamic library")

# Strategies that need a GPU (or, for mirrored, several devices).
GPU_STRATEGIES = ("one_device", "mirrored")
# Why --jit_compile is refused on several replicas (reproduced on 2 logical CPUs, TF 2.21 /
# Keras 3.15: "Trying to access resource .../replica_1/... located in device CPU:1 from
# device CPU:0"; keras-team/keras issues 19005, 21366, 20763).
_JIT_REPLICAS = ("XLA-compiled training steps fail under MirroredStrategy in Keras 3 "
                 "(keras-team/keras#19005, #21366)")


def prepare_environment(environ: Optional[MutableMapping[str, str]] = None) -> None:
  """Sets what must be set before TensorFlow starts, unless the user set it: GPU memory
  growth (TF_FORCE_GPU_ALLOW_GROWTH=true), so each process holds only what it uses; and
  TensorFlow's C++ log level: warnings kept where an NVIDIA driver is present (TensorFlow
  says there why it cannot load CUDA), errors only elsewhere."""
  environ = os.environ if environ is None else environ
  environ.setdefault(MEMORY_GROWTH_ENV, "true")
  environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if driver_present() else "2")


def driver_present() -> bool:
  """An NVIDIA driver is installed (`nvidia-smi` on PATH, or the kernel module's file)."""
  return bool(shutil.which("nvidia-smi")) or os.path.exists(DRIVER_VERSION_FILE)


def nvidia_smi_gpus() -> list[dict[str, str]]:
  """The host's GPUs as nvidia-smi lists them (index, name, compute capability), ignoring
  CUDA_VISIBLE_DEVICES; [] without nvidia-smi (or if it fails)."""
  if not shutil.which("nvidia-smi"):
    return []
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,compute_cap",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         check=False, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return []
  gpus = []
  for line in out.stdout.splitlines():
    fields = [f.strip() for f in line.split(",")]
    if len(fields) == 3 and fields[0].isdigit():
      gpus.append(dict(zip(("index", "name", "compute_cap"), fields)))
  return gpus


def nvidia_smi_count() -> int:
  """GPUs `nvidia-smi -L` lists (every driver version has -L); 0 without nvidia-smi."""
  if not shutil.which("nvidia-smi"):
    return 0
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False,
                         timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return 0
  return len([line for line in out.stdout.splitlines() if line.startswith("GPU ")])


def missing_machine_code(compute_cap: str, build_archs: Sequence[str]) -> Optional[str]:
  """None if the build has machine code (sm_XY) for a GPU of capability "M.m"; otherwise
  why not: its kernels are JIT-compiled from PTX (compute_XY), or there are none.

  Machine code for sm_Mn runs on capability M.m for n <= m (same major version); PTX for
  compute_XY is compiled by the driver for any capability >= X.Y.
  """
  try:
    major, minor = (int(p) for p in compute_cap.split("."))
  except ValueError:
    return None  # Not reported (an old driver): nothing to say.
  sass, ptx = [], []
  for arch in build_archs:
    kind, _, digits = arch.partition("_")
    if digits.isdigit():
      (sass if kind == "sm" else ptx).append((int(digits[:-1]), int(digits[-1])))
  if any(m == major and n <= minor for m, n in sass):
    return None
  if any((m, n) <= (major, minor) for m, n in ptx):
    return (f"this TensorFlow build has no machine code for compute capability "
            f"{compute_cap} (it has {', '.join(build_archs)}): every GPU kernel is "
            f"JIT-compiled from PTX on first use (minutes to half an hour)")
  return (f"this TensorFlow build has no kernels for compute capability {compute_cap} "
          f"(it has {', '.join(build_archs)}); use a TensorFlow build for this GPU")


def keep_line(line: str, *, driver: bool) -> bool:
  """Whether a line TensorFlow wrote at start-up is shown: not its known noise, and the
  lines about loading CUDA only where an NVIDIA driver is present (there they say why no
  GPU is used)."""
  return not (_TF_STARTUP_NOISE.search(line) or (not driver and _CUDA_LOADING.search(line)))


def import_tensorflow_quietly(*, keep_all: bool = False) -> str:
  """Imports TensorFlow, dropping its known start-up lines; returns a line naming the devices
  (and, on a GPU host, the build's CUDA/cuDNN and what is wrong with the setup, if anything).

  Args:
    keep_all: pass every line TensorFlow writes through (--verbosity=1 and up).
  """
  sys.stderr.flush()
  saved_fd = os.dup(2)
  notes = []
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      build = tf.sysconfig.get_build_info()
      # Before CUDA starts (the device listing below): the driver reads its cache size then.
      for gpu in nvidia_smi_gpus():
        problem = missing_machine_code(gpu["compute_cap"],
                                       build.get("cuda_compute_capabilities", []))
        if problem:
          notes.append(f"GPU {gpu['index']} ({gpu['name']}): {problem}")
          if "JIT" in problem and CUDA_CACHE_ENV not in os.environ:
            os.environ[CUDA_CACHE_ENV] = CUDA_CACHE_BYTES
            notes.append(f"set {CUDA_CACHE_ENV}={CUDA_CACHE_BYTES} so the compiled kernels "
                         f"stay cached between runs")
      logical = tf.config.list_logical_devices()  # Initialises CUDA: its lines are here too.
      gpus = tf.config.list_physical_devices("GPU")
    finally:
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
    captured.seek(0)
    driver = driver_present()
    for line in captured.read().decode(errors="replace").splitlines():
      if line.strip() and (keep_all or keep_line(line, driver=driver)):
        print(line, file=sys.stderr)
  names = []
  for device in logical:
    name = device.name
    if device.device_type == "GPU":
      index = int(name.rsplit(":", 1)[1])
      details = (tf.config.experimental.get_device_details(gpus[index])
                 if index < len(gpus) else {})
      name += f" ({details['device_name']})" if details.get("device_name") else ""
    names.append(name)
  text = f"TensorFlow {tf.__version__} on {', '.join(names)}"
  if gpus:
    text += (f" (built with CUDA {build.get('cuda_version', '?')}, cuDNN "
             f"{build.get('cudnn_version', '?')})")
  else:
    text += no_gpu_reason(driver=driver_present(), cuda_build=bool(build.get("is_cuda_build")),
                          visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                          cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
  return "; ".join([text] + notes)


def no_gpu_reason(*, driver: bool, cuda_build: bool, visible: Optional[str],
                  cuda: Optional[str] = None, cudnn: Optional[str] = None) -> str:
  """The devices line's ending when TensorFlow sees no GPU: why, and what to do (`cuda`,
  `cudnn`: the versions the build expects)."""
  if visible is not None and not [d for d in visible.split(",") if d.strip()]:
    return f" (no GPU visible: CUDA_VISIBLE_DEVICES={visible!r} hides them)"
  if not driver:
    return " (no GPU visible: no NVIDIA driver; see docs/gpu.md)"
  if not cuda_build:
    return (" (no GPU visible: an NVIDIA driver is present but this TensorFlow build has "
            "no CUDA support; install the Linux x86-64 or aarch64 wheel)")
  return (" (no GPU visible although an NVIDIA driver is present: TensorFlow could not load "
          f"CUDA {cuda or '?'} / cuDNN {cudnn or '?'}, see the lines above; fix: {GPU_FIX})")


def check_batch_fits_memory(batch_size: int, image_size: int, *, model: str) -> None:
  """One batch of input pixels (float32) must fit in this machine's memory: a larger one
  could only fail, cell after cell, once its data is loaded.

  Raises:
    ValueError: it does not (the message says how far to lower --batch_size).
  """
  pixels = batch_size * image_size**2 * 3 * 4
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if pixels > memory:
    raise ValueError(
        f"--batch_size={batch_size} at {image_size} px (--model={model}): one input batch "
        f"is {pixels / 2**30:,.1f} GiB of float32 pixels, more than this machine's "
        f"{memory / 2**30:,.1f} GiB of memory; lower --batch_size to at most "
        f"{memory // (image_size**2 * 12):,} (or --image_size).")


def resolve_strategy(name: str, *, num_gpus: int, num_cpus: int = 1,
                     jit_compile: bool = False) -> tuple[str, int]:
  """(strategy kind, replicas) that `--strategy=name` means on these devices.

  `auto`: mirrored over the GPUs when there are several, one_device on one GPU, the default
  strategy otherwise. `one_device` needs a GPU. `mirrored` mirrors over the GPUs; with none,
  over the logical CPU devices when the program configured several
  (`tf.config.set_logical_device_configuration`, as the tests do to stand in for GPUs), and
  is an error on a plain CPU host, where it would silently train on one CPU.

  Raises:
    ValueError: a GPU strategy without a GPU, or `jit_compile` on more than one replica
      (one line naming the flags and the fix).
  """
  if name == "auto":
    name = "mirrored" if num_gpus > 1 else ("one_device" if num_gpus else "default")
  if name == "tpu":
    return name, 0  # Replicas known once connected; TPUs always compile with XLA.
  if name == "default":
    return name, 1
  if name not in GPU_STRATEGIES:
    raise ValueError(f"Unknown --strategy={name!r}. Valid choices: {', '.join(STRATEGIES)}.")
  if num_gpus:
    replicas = 1 if name == "one_device" else num_gpus
  elif name == "mirrored" and num_cpus > 1:
    replicas = num_cpus
  else:
    raise ValueError(f"--strategy={name} needs a GPU, and TensorFlow sees none (see the "
                     f"devices line); use --strategy=auto to run on the CPU, or fix the GPU "
                     f"setup: {GPU_FIX}.")
  if jit_compile and replicas > 1:
    raise ValueError(f"--jit_compile with --strategy={name} on {replicas} replicas: "
                     f"{_JIT_REPLICAS}. Drop --jit_compile, or train on one device "
                     f"(--strategy=one_device, or --parallel_trials with --gpus_per_trial=1).")
  return name, replicas


def check_local_strategy(name: str, *, jit_compile: bool = False) -> tuple[str, int]:
  """`resolve_strategy` on this process's logical devices (initialises TensorFlow)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return resolve_strategy(name, num_gpus=len(tf.config.list_logical_devices("GPU")),
                          num_cpus=len(tf.config.list_logical_devices("CPU")),
                          jit_compile=jit_compile)


def provenance(devices: Sequence[str]) -> dict[str, Any]:
  """Where a result's numbers came from, as plain JSON values: the device kind, the GPU
  name(s), whether float32 matmuls may run in TF32 (Ampere and later; the logistic
  regression's solve always runs with TF32 off), and the build's CUDA/cuDNN versions.

  Args:
    devices: the devices the strategy computes on (`training.devices_of`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  kinds = sorted({d.rsplit(":", 2)[-2].upper() for d in devices if ":" in d})
  names = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    names.append(details.get("device_name", gpu.name))
  build = tf.sysconfig.get_build_info()
  on_gpu = "GPU" in kinds
  return {"device_kind": ",".join(kinds) or "CPU", "gpu_names": names if on_gpu else [],
          "tf32": bool(on_gpu and tf.config.experimental.tensor_float_32_execution_enabled()),
          "cuda_version": build.get("cuda_version") if on_gpu else None,
          "cudnn_version": build.get("cudnn_version") if on_gpu else None}


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
  """Float32 matmuls and convolutions run in full float32 inside (TF32 off), the previous
  setting restored after: for solves whose tolerance TF32's 10-bit mantissa would not meet."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  previous = tf.config.experimental.tensor_float_32_execution_enabled()
  tf.config.experimental.enable_tensor_float_32_execution(False)
  try:
    yield
  finally:
    tf.config.experimental.enable_tensor_float_32_execution(previous)


def visible_gpu_ids(environ: Optional[Mapping[str, str]] = None) -> list[str]:
  """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs),
  without TensorFlow: the parent's CUDA_VISIBLE_DEVICES list as CUDA reads it (up to the
  first invalid entry), else every GPU `nvidia-smi` lists."""
  environ = os.environ if environ is None else environ
  visible = environ.get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    return [str(i) for i in range(nvidia_smi_count())]
  ids = []
  for entry in visible.split(","):
    entry = entry.strip()
    if not entry or entry.startswith("-"):
      break  # CUDA ignores this entry and every one after it.
    ids.append(entry)
  return ids
