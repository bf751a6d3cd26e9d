#!/usr/bin/env bash
# The quick start: make .venv (with an MPI runtime), or reuse it as it is (no network needed once it is made: see
# jobs/venv.sh), then run GD, EF and EF21 with Top-1 on 4 ranks.
# Writes results/quickstart-{GD,EF,EF21}.h5, prints a comparison table, draws results/quickstart.png.
#   usage: jobs/quickstart.sh [RANKS]      (default 4; set PYTHON to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-4}
jobs/venv.sh .venv mpi,plot
export OMP_NUM_THREADS=1
exec .venv/bin/mpiexec -n "$RANKS" .venv/bin/python -m mpi4py -m mpiclip run quickstart --plot results/quickstart.png
