#!/usr/bin/env bash
# Run a sweep grid on ONE many-core machine (optionally one GPU) as one process per
# (witness rate, seed), then merge the parts into one folder with its report.
#
#   benchmarks/parallel_sweep.sh OUT "WR ..." "SEED ..." [sweep options ...]
#   e.g. SWEEP_DEADLINE=420 benchmarks/parallel_sweep.sh outputs/sweep "0.1 0.05 0.01 0.005" \
#        "0 1 2" --preset laptop --device cuda --methods oracle simclr slam_ags
#
# Why one process per (witness rate, seed): each renders its own bag set once and then runs its
# methods in the order given, so the processes never write the same cache entry; every process
# is single-threaded (OMP_NUM_THREADS=1) and they share the GPU. A process stopped by
# SWEEP_DEADLINE (seconds, default: none) keeps the rows it finished (results.csv is written
# after every row) and a rerun of the same command resumes it. The parts are merged with
# `python -m slamags_core merge`, which also writes the report (results.md, plots); with
# SWEEP_MERGE=0 the parts are left for `python -m slamags_core merge --out OUT OUT/parts/*` later.
# Use `--shard K/N` with a job array instead when the parts run on different machines.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n 2,7p "$0"; exit 2
fi
out=$1; wrs=$2; seeds=$3; shift 3
py=${PYTHON:-python3}
mkdir -p "$out/parts"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
pids=()
for wr in $wrs; do
    for seed in $seeds; do
        part="$out/parts/wr${wr}_s${seed}"
        mkdir -p "$part"
        if [ -n "${SWEEP_DEADLINE:-}" ]; then
            cmd=(timeout -s INT "$SWEEP_DEADLINE" "$py")
        else
            cmd=("$py")
        fi
        "${cmd[@]}" -m slamags_core sweep --out "$part" --witness-rates "$wr" --seeds "$seed" \
            --no-report --no-progress "$@" > "$part/stdout.log" 2>&1 &
        pids+=($!)
    done
done
status=0
for p in "${pids[@]}"; do
    wait "$p" || { echo "a part exited with $? (see $out/parts/*/stdout.log)" >&2; status=1; }
done
if [ "${SWEEP_MERGE:-1}" != 0 ]; then  # SWEEP_MERGE=0: merge later (elsewhere)
    "$py" -m slamags_core merge --out "$out" "$out"/parts/* || status=1
fi
exit $status
