#!/usr/bin/env bash
# The GPU measurement (issue 19), for a lent CUDA machine: run from the repository root, obliviate need not be
# installed (src/ is put on the path). Writes $OUT/gpu.json when OUT is set. About 2-4 minutes on one H200.
#   bash benchmarks/gpu.sh [gpu_bench.py options, e.g. --vocab 32000]
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
PYTHONPATH=src timeout 290 python3 benchmarks/gpu_bench.py "$@"
