#!/usr/bin/env bash
# Every GPU check of the project in one run, for a machine with a CUDA GPU and deepkin installed
# (a CUDA build of torch; gcc, g++ and libcurl headers for step 4). Prints the figures the issues
# ask for; writes them under ${OUT:-gpu-out}.
#
#   bash benchmarks/gpu_checks.sh            # ~8 min on an H100 with 16 cores
#   bash benchmarks/gpu_checks.sh --dry-run  # print the commands, run none (any machine)
#
# 1. the GPU tests (tests/test_gpu.py: shipped model on the GPU vs the CPU, conservation, the
#    near-equilibrium network, the service with --device cuda, bit for bit);
# 2. step throughput of the GRI-sized network, float32 / TF32 / bf16, 65k and 1M cells
#    (goal >= 5 M cells/s in float32), and of the shipped models (h2-air; ch4-air on methane
#    flame mixes, against Cantera on one core: issue #11's GPU figure);
# 3. the service end to end at 10^6 cells per request on the GRI-sized network (goal >= 2 M cells/s);
# 4. the C library's in-process step on the GPU (issue 27): the shipped models written by
#    `deepkin export` for the CPU and for CUDA, stepped through couplers/c (built against the
#    wheel's libtorch, CUDA included) at 1, 36, 1,000 and 65,536 cells per call, CUDA against the
#    CPU in-process path on 1 thread and on every core, in the same run.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_checks.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python}
status=0

# check NAME COMMAND...: run COMMAND, its output also into $OUT/NAME.txt; a failure fails the run
# (after the other checks). --dry-run prints it instead.
check() {
    local name=$1
    shift
    if [ -n "$DRY_RUN" ]; then
        printf '%s:' "$name"; printf ' %q' "$@"; printf '\n'
        return 0
    fi
    "$@" 2>&1 | tee "$OUT/$name.txt" || status=1
}

[ -n "$DRY_RUN" ] || mkdir -p "$OUT/exported"
check gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
check tests "$PYTHON" -m pytest -q tests/test_gpu.py
check step_throughput "$PYTHON" benchmarks/step_throughput.py --device cuda --mechanism gri30.yaml \
    --fuel CH4:1 --sizes 3200-1600-800-400 --mixes autoignition --cells 65536 1048576 \
    --dtypes float32 tf32 bfloat16 --repeat 3
check step_throughput_h2-air "$PYTHON" benchmarks/step_throughput.py --device cuda --model h2-air \
    --sizes --cells 65536 1048576 --repeat 3
check step_throughput_ch4-air "$PYTHON" benchmarks/step_throughput.py --device cuda --model ch4-air \
    --sizes --mixes premixed-phi1 premixed-phi0.7 counterflow --cells 65536 1048576 \
    --dtypes float32 bfloat16 --repeat 3
check service_throughput "$PYTHON" benchmarks/service_throughput.py --device cuda --cells 1000000 \
    --hidden 3200,1600,800,400 --threads 4 --repeats 3
for model in h2-air-flame ch4-air; do
    for device in cpu cuda; do
        check "export_$model.$device" "$PYTHON" -m deepkin export "$model" \
            -o "$OUT/exported/$model.$device.pt" --device "$device"
    done
done
check inprocess_cuda "$PYTHON" benchmarks/call_overhead.py --device cuda --exported "$OUT/exported" \
    --models h2-air-flame ch4-air --cells 1 36 1000 65536 --repeat 5
exit $status
