#!/usr/bin/env bash
# Builds convs.cpp for every x86-64 level this CPU runs (and for aarch64 where a cross compiler is
# at hand, run under qemu-aarch64 where that is at hand), checks each build's forward pass against
# plain loops (bench/check_convs.cpp), and counts its vector and scalar float instructions: a build
# whose compares and selects fell back to scalar code shows up as many *ss instructions and jp.
#   bash bench/check_isa.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cxx=${CXX:-c++}
levels=$(python3 - <<'PY'
flags = set()
for line in open("/proc/cpuinfo"):
    if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
need = {"x86-64-v2": {"sse4_2", "popcnt", "ssse3"}, "x86-64-v3": {"avx2", "fma", "bmi2", "f16c", "movbe"},
        "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}}
print(" ".join(k for k, v in need.items() if v <= flags))
PY
)
count() {  # vector float ops, scalar float ops, and parity branches (scalar compares) in a library
  objdump -d --no-show-raw-insn "$1" | awk -F'\t' 'NF >= 2 { split($2, a, " "); print a[1] }' |
    awk '/ps$/ { v++ } /ss$/ { s++ } /^jp$/ { j++ } END { printf "%d vector, %d scalar float ops, %d jp\n", v, s, j }'
}
for level in $levels; do
  "$cxx" -O3 -march="$level" -fopenmp -o "$tmp/check-$level" bench/check_convs.cpp
  "$cxx" -O3 -march="$level" -fopenmp -shared -fPIC -std=c++17 -o "$tmp/convs-$level.so" src/lenet5/fast/convs.cpp
  printf '%-10s %s; ' "$level" "$(count "$tmp/convs-$level.so")"
  "$tmp/check-$level"
done
if command -v aarch64-linux-gnu-g++ >/dev/null; then
  aarch64-linux-gnu-g++ -O3 -static -o "$tmp/check-arm" bench/check_convs.cpp
  aarch64-linux-gnu-g++ -O3 -fopenmp -shared -fPIC -std=c++17 -o "$tmp/convs-arm.so" src/lenet5/fast/convs.cpp
  ops=$(aarch64-linux-gnu-objdump -d --no-show-raw-insn "$tmp/convs-arm.so" |
        awk -F'\t' 'NF >= 2 { split($2, a, " "); print a[1] }' | grep -c '^fmla$' || true)
  printf 'aarch64    %s NEON fmla; ' "$ops"
  if command -v qemu-aarch64 >/dev/null; then qemu-aarch64 "$tmp/check-arm"; else echo "built (no qemu-aarch64 to run it)"; fi
else
  echo "aarch64    skipped: no aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu qemu-user)"
fi
