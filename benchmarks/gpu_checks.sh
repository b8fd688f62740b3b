#!/usr/bin/env bash
# Every GPU check of the project in one run, for a machine with a CUDA GPU and deepkin installed
# (a CUDA build of torch). Prints the figures the issues ask for; writes them under ${OUT:-gpu-out}.
#
#   bash benchmarks/gpu_checks.sh            # ~5 min on an H100
#
# 1. the GPU tests (tests/test_gpu.py: shipped model on the GPU vs the CPU, conservation, the
#    near-equilibrium network, the service with --device cuda, bit for bit);
# 2. step throughput of the GRI-sized network, float32 / TF32 / bf16, 65k and 1M cells
#    (goal >= 5 M cells/s in float32), and of the shipped models (h2-air; ch4-air on methane
#    flame mixes, against Cantera on one core: issue #11's GPU figure);
# 3. the service end to end at 10^6 cells per request on the GRI-sized network (goal >= 2 M cells/s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
status=0
python -m pytest -q tests/test_gpu.py 2>&1 | tee "$OUT/tests.txt" || status=1
python benchmarks/step_throughput.py --device cuda --mechanism gri30.yaml --fuel CH4:1 \
    --sizes 3200-1600-800-400 --mixes autoignition --cells 65536 1048576 \
    --dtypes float32 tf32 bfloat16 --repeat 3 2>&1 | tee "$OUT/step_throughput.txt" || status=1
python benchmarks/step_throughput.py --device cuda --model h2-air --sizes --cells 65536 1048576 \
    --repeat 3 2>&1 | tee "$OUT/step_throughput_h2-air.txt" || status=1
python benchmarks/step_throughput.py --device cuda --model ch4-air --sizes \
    --mixes premixed-phi1 premixed-phi0.7 counterflow --cells 65536 1048576 \
    --dtypes float32 bfloat16 --repeat 3 2>&1 | tee "$OUT/step_throughput_ch4-air.txt" || status=1
python benchmarks/service_throughput.py --device cuda --cells 1000000 --hidden 3200,1600,800,400 \
    --threads 4 --repeats 3 2>&1 | tee "$OUT/service_throughput.txt" || status=1
exit $status
