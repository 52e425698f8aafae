#!/usr/bin/env bash
# Benchmark of the audit write path alone (bench/AUDIT.md): pairs/s committed by the audit writer
# with group commit on and off, beside the ceiling (the same rows in one transaction), for
# durability full and normal. Extra arguments go to every `hookgate bench-audit` run, e.g.
#   bench/audit.sh --pairs 5000 --off-pairs 1000 --dir /var/lib/hookgate/bench
# Environment: SCRATCH (build directory, default .build-helper).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${SCRATCH:-.build-helper}"
echo "== building (release, $scratch)"
swift build -c release --scratch-path "$scratch" 2>&1 | tail -n 1
bin="$scratch/release/hookgate"
echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
for durability in full normal; do
  echo
  "$bin" bench-audit --durability "$durability" "$@"
done
