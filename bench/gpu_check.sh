#!/usr/bin/env bash
# lenet5 on a CUDA machine, in one pass: the CUDA tests (tests/test_cuda.py: training, resume,
# CPU-loadable files, CUDA graphs against plain steps, torchrun over nccl with 2+ GPUs), then the
# speed benchmark with the GPU targets (plain steps and --cuda-graphs side by side), then a profile
# of each kind of step.
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
$py -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/gpu-tests.txt"
tests=${PIPESTATUS[0]}
$py bench/bench_speed.py --full --device cuda --out "$out/speed-cuda.json" 2>&1 | tee "$out/speed-cuda.txt"
bench=${PIPESTATUS[0]}
# Where a step's time goes, for whichever target is missed: plain steps, then CUDA graphs.
$py bench/profile_step.py --device cuda --batch-size 256 2>&1 | tee "$out/profile-cuda.txt"
$py bench/profile_step.py --device cuda --batch-size 256 --cuda-graphs 2>&1 | tee "$out/profile-cuda-graphs.txt"
echo "gpu_check: tests exit $tests, benchmark exit $bench"
exit $(( tests != 0 || bench != 0 ))
