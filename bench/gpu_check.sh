#!/usr/bin/env bash
# lenet5 on a CUDA machine, in one pass: the CUDA tests (tests/test_cuda.py: training, resume,
# CPU-loadable files, CUDA graphs against plain steps, torchrun over nccl with 2+ GPUs); the speed
# benchmark with the GPU targets (recorded steps, the default, and plain ones); time to accuracy
# over seeds for the fast, default and best recipes; a cold `lenet5 train --recipe fast`; then
# a profile of each kind of step (recorded as CUDA graphs, the default, and plain).
#
#     bash bench/gpu_check.sh            # figures and logs to $OUT, else bench/results/
#
# Uses src/ in place: it needs only torch (a CUDA build), numpy, tqdm and pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

$py - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA GPU (torch " + torch.__version__ + ")")
print("torch", torch.__version__, "on", torch.cuda.get_device_name(), "x", torch.cuda.device_count())
PY
# Each stage has its own time limit, so one that hangs cannot take the others' time.
timeout 240 $py -m pytest -q -s -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/gpu-tests.txt"
tests=${PIPESTATUS[0]}
timeout 300 $py bench/bench_speed.py --full --device cuda --out "$out/speed-cuda.json" 2>&1 | tee "$out/speed-cuda.txt"
bench=${PIPESTATUS[0]}
# Time to accuracy over three seeds for the fast, default and best recipes.
timeout 240 $py bench/time_to_accuracy.py --device cuda --grid --out "$out/tta-cuda.json" 2>&1 \
    | tee "$out/tta-cuda.txt"
# What a user sees: `lenet5 train --recipe fast` from a cold start, plots included.
{ time timeout 120 $py -m lenet5 train --recipe fast --device cuda --no-progress \
    --data-dir data --out-dir "$(mktemp -d)" --name cli; } 2>&1 | tee "$out/cli-cuda.txt"
# Where a step's time goes, for whichever target is missed: recorded steps, then plain ones.
timeout 90 $py bench/profile_step.py --device cuda --batch-size 256 2>&1 | tee "$out/profile-cuda.txt"
timeout 90 $py bench/profile_step.py --device cuda --batch-size 256 --no-cuda-graphs --by-shape 2>&1 \
    | tee "$out/profile-cuda-plain.txt"
echo "gpu_check: tests exit $tests, benchmark exit $bench"
exit $(( tests != 0 || bench != 0 ))
