#!/usr/bin/env bash
# Every GPU path of cmtp in one command (see benchmarks/gpu_check.py); skips cleanly without a GPU.
# On a GPU machine install a CUDA torch and faiss-gpu first: make install TORCH_SPEC=torch==2.13.0 &&
# .venv/bin/pip install 'faiss-gpu-cu12>=1.8'
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
exec "$PYTHON" gpu_check.py "$@"
