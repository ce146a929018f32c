#!/usr/bin/env bash
# The device checks this CPU box cannot do, in one script for the GPU machine (see
# bench/GPU_RESULTS.md and ../shared/tools/gpu/README.md). Run there as
#     bash .gpu/on-device.sh bash bench/gpu_pending.sh
# after the parts of onnxruntime-gpu were carried. Writes what it measured under $OUT.
set -u
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
echo "== 1. edged calibrate on a GPU keys its measurement by the device (fixed 2026-12-04)"
timeout 120 python3 -m pytest -q -x -p no:cacheprovider \
    "tests/integration/test_memory_truth.py::test_calibration_at_first_load_and_by_edged_calibrate" \
    2>&1 | tail -15 | tee "$OUT/calibrate_test.txt"
echo "== 2. lanes bound to their memory (IO binding) against unbound, on the CUDA EP"
timeout 150 python3 bench/lane_bind.py --n 500 --seconds 2 --out "$OUT/lane_bind_gpu.md" \
    2>&1 | tail -8
echo "== 3. the lane benchmark on the CUDA EP (det-shaped row, alternating 8-client rounds)"
timeout 240 python3 -m bench.lane --cuda --quick --out "$OUT/lane_gpu.md" 2>&1 | tail -30
echo "== 4. the disk's order on this machine's own storage (bench/disk_order.py: 1785 MB of"
echo "   model-sized files read side by side against one at a time; stdlib only)"
timeout 120 python3 -m bench.disk_order --repeats 3 2>&1 | tee "$OUT/disk_order.md" | tail -8
echo "== done: $OUT"
ls -l "$OUT"
