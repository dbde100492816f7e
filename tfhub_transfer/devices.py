"""TensorFlow's start-up, quietly, and the line naming the devices a run computes on.

TensorFlow's C++ code writes a few lines to stderr (fd 2) when it is imported, before
absl::InitializeLog, where TF_CPP_MIN_LOG_LEVEL does not reach: the oneDNN notice, "Could not
find cuda drivers", twice over. The command line imports TensorFlow through
`import_tensorflow_quietly`, which drops those known lines and passes any other through, and
logs the devices as its first line instead.
"""

import os
import re
import sys
import tempfile

# The known start-up lines, with nothing to act on; anything else is passed through.
_TF_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin"
    r"|computation_placer\.cc:\d+\] .* already registered"
    r"|TF-TRT Warning: Could not find TensorRT")


def import_tensorflow_quietly(*, keep_all: bool = False) -> str:
  """Imports TensorFlow, dropping its known start-up lines; returns a line naming the devices.

  Args:
    keep_all: pass every line TensorFlow writes through (--verbosity=1 and up).
  """
  sys.stderr.flush()
  saved_fd = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      logical = tf.config.list_logical_devices()  # Initialises CUDA: its lines are here too.
      gpus = tf.config.list_physical_devices("GPU")
    finally:
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
    captured.seek(0)
    for line in captured.read().decode(errors="replace").splitlines():
      if line.strip() and (keep_all or not _TF_STARTUP_NOISE.search(line)):
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
  if not gpus:
    text += " (no GPU visible: see the README's GPU section)"
  return text
