#!/usr/bin/env bash
# Step time on a GPU, with XLA on and off (benchmarks.step_time through benchmarks.run, section
# speed_gpu): recorded in benchmarks/results and BENCHMARKS.md next to the CPU figures.
# Without a GPU that TensorFlow can use, it says so in one line, exits 0 and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

tensorflow_sees_a_gpu() {
  TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" -c \
    'import sys, tensorflow as tf; sys.exit(not tf.config.list_physical_devices("GPU"))' \
    >/dev/null 2>&1
}

if ! tensorflow_sees_a_gpu; then
  reason="no GPU on this machine"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    reason="nvidia-smi lists a GPU that TensorFlow cannot use (BUILD.md, GPU)"
  fi
  echo "gpu_check: $reason; nothing measured."
  exit 0
fi
"$PYTHON" -m benchmarks.run --only=speed_gpu
