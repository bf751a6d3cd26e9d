#!/usr/bin/env bash
# The quick start: make .venv (with an MPI runtime), then run GD, EF and EF21 with Top-1 on 4 ranks.
# Writes results/quickstart-{GD,EF,EF21}.h5, prints a comparison table, draws results/quickstart.png.
#   usage: jobs/quickstart.sh [RANKS]      (default 4; set PYTHON to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-4}
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[mpi,plot]'
export OMP_NUM_THREADS=1
exec .venv/bin/mpiexec -n "$RANKS" .venv/bin/python -m mpi4py -m mpiclip run quickstart --plot results/quickstart.png
