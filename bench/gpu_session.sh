#!/usr/bin/env bash
# The first 15 minutes on a GPU host: what to run, each step time-boxed, every log in one
# folder. Run from anywhere, after `pip install -e '.[gpu]'`:
#
#   bench/gpu_session.sh [LOG_DIR]        # default: gpu_session_<UTC time>/
#   DRY_RUN=1 bench/gpu_session.sh DIR    # print the steps and their time boxes, run none
#
# Steps (seconds allowed): 1 environment and build info (60); 2 kernel-compile cost: the
# first and second forward pass of ResNet-50, whose gap is the GPU kernels' first-use cost
# (PTX JIT where the build has no machine code for the GPU) (120); 3 one logreg cell with
# mixed precision (120); 4 one fine-tune trial with mixed precision (150); 5 the two-replica
# check, when there are 2+ GPUs (90); 6 the GPU's cost of --resize_on_device's resample,
# then pipeline vs forward rates, bench figure 1 (240); 7 the precision / XLA figure, bench
# figure 8 (240). A step that runs out of time is
# stopped (exit 124 in summary.txt) and the next one starts. Send back the whole folder.
set -u
cd "$(dirname "$0")/.."
LOG_DIR=${1:-gpu_session_$(date -u +%Y%m%dT%H%M%SZ)}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
SUMMARY="$LOG_DIR/summary.txt"
export TF_FORCE_GPU_ALLOW_GROWTH=${TF_FORCE_GPU_ALLOW_GROWTH:-true}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
WORKDIR="$LOG_DIR/workdir"
CELL=(--dataset=digits --model=mobilenet_v2 --batch_size=64 --precision=mixed_float16
      "--workdir=$WORKDIR")
echo "gpu_session $(date -u +%FT%TZ) in $PWD, logs in $LOG_DIR" > "$SUMMARY"

# step NAME SECONDS COMMAND...: runs COMMAND under `timeout`, output to LOG_DIR/NAME.log.
step() {
  local name=$1 seconds=$2
  shift 2
  if [ "$DRY_RUN" = 1 ]; then
    echo "$name (timeout ${seconds}s): $*" | tee -a "$SUMMARY"
    return
  fi
  local start=$SECONDS
  echo "== $name (at most ${seconds}s): $*"
  timeout --kill-after=10 "$seconds" "$@" > "$LOG_DIR/$name.log" 2>&1
  local code=$?
  echo "$name exit=$code seconds=$((SECONDS - start))$([ $code = 124 ] && echo ' TIMED OUT')" \
    | tee -a "$SUMMARY"
}

step 1_environment 60 bash -c "
  nvidia-smi; nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version \
    --format=csv; env | grep -E '^(CUDA|TF_|NVIDIA|XLA)' | sort; $PYTHON -m pip list \
    2>/dev/null | grep -iE '^(tensorflow|keras|nvidia-)'
  $PYTHON -c 'import json, tensorflow as tf
print(tf.__version__, json.dumps(dict(tf.sysconfig.get_build_info())))
for gpu in tf.config.list_physical_devices(\"GPU\"):
  print(gpu.name, tf.config.experimental.get_device_details(gpu))
print(\"TF32 enabled:\", tf.config.experimental.tensor_float_32_execution_enabled())'"

step 2_kernel_compile 120 "$PYTHON" -c '
import time, keras, tensorflow as tf
model = keras.applications.ResNet50(weights=None)
images = tf.random.uniform([32, 224, 224, 3])
for name in ("first", "second", "third"):
  start = time.perf_counter()
  model(images, training=False).numpy()
  print(f"{name} forward: {time.perf_counter() - start:.2f} s", flush=True)'

step 3_logreg_cell 120 "$PYTHON" -m tfhub_transfer.cli --regime=logreg "${CELL[@]}"

step 4_finetune_trial 150 "$PYTHON" -m tfhub_transfer.cli --regime=finetune "${CELL[@]}" \
  --train_steps=100 --learning_rates=0.01 --weight_decays=0

GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ')
if [ "$GPUS" -ge 2 ] || [ "$DRY_RUN" = 1 ]; then
  step 5_two_replicas 90 "$PYTHON" -m tests.mirrored_check --devices=gpu
else
  echo "5_two_replicas skipped: $GPUS GPU(s)" | tee -a "$SUMMARY"
fi

step 6_pipeline_vs_forward 240 bash -c "$PYTHON -m bench.preprocessing resample
  $PYTHON -m bench --device --figures=1 --nowrite"

step 7_precision_xla 240 "$PYTHON" -m bench --device --figures=8 --nowrite

echo "done: $SUMMARY"
