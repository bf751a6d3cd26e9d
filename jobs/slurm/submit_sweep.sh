#!/usr/bin/env bash
# Submit a sweep as a Slurm job array: RUNS_PER_TASK runs per array task, each with RANKS_PER_RUN ranks.
#   jobs/slurm/submit_sweep.sh SWEEP.toml [RUNS_PER_TASK=1] [RANKS_PER_RUN=1] [sbatch options...]
#   e.g. jobs/slurm/submit_sweep.sh jobs/sweeps/ef21-logreg-a9a.toml 10 1 --time=00:30:00
#   MPICLIP_MAX_ARRAY_SIZE: the cluster's MaxArraySize (default 1001, Slurm's)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SWEEP=$1; PER_TASK=${2:-1}; RANKS=${3:-1}; shift $(( $# < 3 ? $# : 3 ))
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
RUNS=$("$PY" -m mpiclip sweep list "$SWEEP" --count)
TASKS=$(( (RUNS + PER_TASK - 1) / PER_TASK ))
MAX=${MPICLIP_MAX_ARRAY_SIZE:-1001}  # the cluster's MaxArraySize (Slurm's default 1001): larger sweeps take several arrays
echo "$RUNS runs -> $TASKS array tasks of $PER_TASK run(s) on $RANKS rank(s)"
for (( FIRST = 0; FIRST < TASKS; FIRST += MAX )); do
  COUNT=$(( TASKS - FIRST < MAX ? TASKS - FIRST : MAX ))
  sbatch --array=0-$((COUNT - 1)) --ntasks="$RANKS" --export=ALL,MPICLIP_TASK_OFFSET=$FIRST "$@" \
    "$ROOT/jobs/slurm/sweep.sbatch" "$SWEEP" "$PER_TASK" "$RANKS"
done
