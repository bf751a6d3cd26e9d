#!/usr/bin/env bash
# Run mpiclip on this machine's cores with the project's virtual environment.
#   usage: jobs/laptop.sh [-n RANKS] CONFIG... [mpiclip run options]
#   e.g.   jobs/laptop.sh -n 2 ef21-libsvm --set data.path=a9a.txt --set stepsize.factor=64
# One BLAS thread per rank (more only oversubscribes the cores). Uses .venv/bin/mpiexec when present,
# so the launcher matches the MPI that mpi4py loads (another MPI's mpiexec cannot start its ranks).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RANKS=$(nproc 2>/dev/null || echo 2)
if [ "${1:-}" = "-n" ]; then RANKS=$2; shift 2; fi
if [ $# -eq 0 ]; then sed -n '2,6p' "$0"; exit 2; fi
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
MPIEXEC="$ROOT/.venv/bin/mpiexec"; [ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
export OMP_NUM_THREADS=1
exec "$MPIEXEC" -n "$RANKS" "$PY" -m mpi4py -m mpiclip run "$@"
