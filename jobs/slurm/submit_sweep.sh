#!/usr/bin/env bash
# Submit a sweep as Slurm job arrays: RUNS_PER_TASK runs per array task, each with RANKS_PER_RUN ranks.
#   jobs/slurm/submit_sweep.sh SWEEP.toml [RUNS_PER_TASK=1] [RANKS_PER_RUN=1] [sbatch options...]
#   e.g. jobs/slurm/submit_sweep.sh jobs/sweeps/ef21-logreg-a9a.toml 10 1 --time=00:30:00
# A sweep of more tasks than the cluster's MaxArraySize goes in several arrays, each told the offset of its first
# task (MPICLIP_TASK_OFFSET); a task computes its own slice of the sweep (sweep run --task). MaxArraySize is read
# from `scontrol show config` (MPICLIP_MAX_ARRAY_SIZE overrides it; Slurm's default 1001 where neither says).
# MPICLIP_VENV: the environment the tasks activate (default: this checkout's .venv if there is one). MPICLIP_DRY_RUN=1 prints
# the sbatch commands instead of running them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SWEEP=$1; PER_TASK=${2:-1}; RANKS=${3:-1}; shift $(( $# < 3 ? $# : 3 ))
if [ -z "${MPICLIP_VENV:-}" ] && [ -f "$ROOT/.venv/bin/activate" ]; then export MPICLIP_VENV=$ROOT/.venv; fi
PY=python3
if [ -n "${MPICLIP_VENV:-}" ] && [ -x "$MPICLIP_VENV/bin/python" ]; then PY=$MPICLIP_VENV/bin/python; fi
RUNS=$("$PY" -m mpiclip sweep list "$SWEEP" --count)
TASKS=$(( (RUNS + PER_TASK - 1) / PER_TASK ))
MAX=${MPICLIP_MAX_ARRAY_SIZE:-}
FROM="MPICLIP_MAX_ARRAY_SIZE"
if [ -z "$MAX" ]; then
  MAX=$(scontrol show config 2>/dev/null | awk -F= '/^MaxArraySize/ {gsub(/[ \t]/, "", $2); print $2}' || true)
  FROM="scontrol show config"
fi
if [ -z "$MAX" ]; then MAX=1001; FROM="Slurm's default"; fi
if ! [[ "$MAX" =~ ^[0-9]+$ ]] || [ "$MAX" -lt 1 ]; then
  echo "submit_sweep.sh: error: MaxArraySize = '$MAX' (from $FROM): must be a whole number >= 1" >&2
  exit 2
fi
ARRAYS=$(( (TASKS + MAX - 1) / MAX ))
echo "$RUNS runs -> $TASKS array tasks of $PER_TASK run(s) on $RANKS rank(s), in $ARRAYS array(s) of at most $MAX" \
     "(MaxArraySize, from $FROM)"
for (( FIRST = 0; FIRST < TASKS; FIRST += MAX )); do
  COUNT=$(( TASKS - FIRST < MAX ? TASKS - FIRST : MAX ))
  command=(sbatch --array=0-$((COUNT - 1)) --ntasks="$RANKS" --export=ALL,MPICLIP_TASK_OFFSET=$FIRST "$@"
           "$ROOT/jobs/slurm/sweep.sbatch" "$SWEEP" "$PER_TASK" "$RANKS")
  if [ "${MPICLIP_DRY_RUN:-0}" = 1 ]; then echo "${command[*]}"; else "${command[@]}"; fi
done
