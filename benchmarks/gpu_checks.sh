#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script (CI has none): bench_scale's GPU rows, then the
# GPU test module. Run from the repository root on a machine with CUDA and the project's
# dependencies (`.venv/bin/pip install -e .` or wheels on PYTHONPATH):
#
#     bash benchmarks/gpu_checks.sh [results folder]
#
# Writes gpu_bench.log, scale.json and gpu_tests.log to the folder (default benchmarks/results).
set -u
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 CI=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
timeout "${BENCH_TIMEOUT:-240}" $py benchmarks/bench_scale.py --devices cuda --skip-ranks \
    2>&1 | tee "$out/gpu_bench.log"
cp benchmarks/results/scale.json "$out/" 2>/dev/null
timeout "${TEST_TIMEOUT:-300}" $py -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    --durations=15 -W ignore::DeprecationWarning 2>&1 | tee "$out/gpu_tests.log"
