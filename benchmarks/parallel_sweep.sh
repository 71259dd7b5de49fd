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
# SWEEP_METHOD_GROUPS splits each (witness rate, seed) further: its bag set is rendered once
# (`sweep --render-only`), then one process per comma-separated group of methods shares it,
# e.g. SWEEP_METHOD_GROUPS="oracle simclr slam_ags slam_sum random,slam_pcgrad deep_svdd weak supcon"
# (more processes than cores only adds contention).
# Use `--shard K/N` with a job array instead when the parts run on different machines.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n 2,7p "$0"; exit 2
fi
out=$1; wrs=$2; seeds=$3; shift 3
py=${PYTHON:-python3}
mkdir -p "$out/parts"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
end=""  # SWEEP_DEADLINE counts from now for every process, the rendering included
[ -n "${SWEEP_DEADLINE:-}" ] && end=$(( $(date +%s) + SWEEP_DEADLINE ))
sweep() {  # sweep PART_FOLDER ARGS...: one sweep process, stopped at the deadline if one is set
    local part=$1; shift
    local stop=()
    if [ -n "$end" ]; then
        local left=$(( end - $(date +%s) ))
        [ "$left" -gt 0 ] || return 0
        stop=(timeout -s INT "$left")
    fi
    mkdir -p "$part"
    ${stop[@]+"${stop[@]}"} "$py" -m slamags_core sweep --out "$part" "$@" >> "$part/stdout.log" 2>&1
}
groups=()  # SWEEP_METHOD_GROUPS="oracle simclr,slam_ags random": one process per group
[ -n "${SWEEP_METHOD_GROUPS:-}" ] && IFS=, read -r -a groups <<< "$SWEEP_METHOD_GROUPS"
pids=()
for wr in $wrs; do
    for seed in $seeds; do
        part="$out/parts/wr${wr}_s${seed}"
        common=(--witness-rates "$wr" --seeds "$seed" --no-report --no-progress "$@")
        if [ ${#groups[@]} -eq 0 ]; then
            sweep "$part" "${common[@]}" &
        else  # render the bag set once, then the groups share it from the cache
            (
                sweep "${part}_g0" "${common[@]}" --render-only || exit $?
                gpids=()
                for i in "${!groups[@]}"; do
                    read -r -a ms <<< "${groups[$i]}"
                    sweep "${part}_g$i" "${common[@]}" --methods "${ms[@]}" &
                    gpids+=($!)
                done
                st=0
                for p in "${gpids[@]}"; do wait "$p" || st=$?; done
                exit $st
            ) &
        fi
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
