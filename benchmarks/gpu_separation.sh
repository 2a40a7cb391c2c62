#!/usr/bin/env bash
# Cross-job batched separation vs demucs' apply_model on a GPU (benchmarks/gpu_separation.py).
#
#   benchmarks/gpu_separation.sh prepare     here, once: copies the pure-Python demucs and julius
#                                            packages into var/gpu-pydeps (the GPU image lacks them)
#   benchmarks/gpu_separation.sh [ARGS...]   on the GPU machine (carry var/gpu-pydeps); ARGS go to
#                                            the Python script, e.g. --dry-run, --out DIR
#   benchmarks/gpu_separation.sh render [ARGS...]
#                                            on the GPU machine: the session graph on cupy vs
#                                            numba (benchmarks/gpu_render.py; needs nothing carried),
#                                            capped at 170 s
#
# The whole run is capped at 7m50s; the default workload takes about two minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=var/gpu-pydeps

if [ "${1:-}" = prepare ]; then
  PY=${PYTHON:-.venv/bin/python}
  rm -rf "$DEPS"
  mkdir -p "$DEPS"
  for mod in demucs julius; do
    src=$("$PY" -c "import os, $mod; print(os.path.dirname($mod.__file__))")
    cp -r "$src" "$DEPS/"
  done
  find "$DEPS" -name __pycache__ -prune -exec rm -rf {} +
  echo "prepared $DEPS; carry it: run(command='bash benchmarks/gpu_separation.sh', carry=['$DEPS'])"
  exit 0
fi

PY=${PYTHON:-python3}
if [ "${1:-}" = render ]; then
  shift
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  exec timeout 170 "$PY" benchmarks/gpu_render.py "$@"
fi
if ! "$PY" -c "import demucs, julius" 2>/dev/null; then
  export PYTHONPATH="$PWD/$DEPS${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 470 "$PY" benchmarks/gpu_separation.py "$@"
