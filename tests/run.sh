#!/usr/bin/env bash
# Set up and run the whole test suite: ruff, the serial tests, then the MPI tests on 2 and 4 ranks.
#   usage: tests/run.sh            (uses ./.venv, created if missing; set VENV=... to use another)
# A working environment is reused without pip (jobs/venv.sh), so that a second run needs no network.
# Fails if any suite fails, if a suite collects no tests (pytest exit code 5), or if any rank of an
# MPI suite fails or hangs (docs/design.md §3: conftest.py reduces failures over ranks, `-m mpi4py` aborts
# the job when a rank exits non-zero, and every suite runs under a timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV" || exit 1
fi
# torch's CPU build for the network tests, first: a plain `torch` requirement takes a CUDA build of several GB.
# TORCH_SPEC chooses another (e.g. "torch --index-url https://download.pytorch.org/whl/cpu" on a machine with network).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check ${TORCH_SPEC:-torch==2.13.0} || exit 1
fi
jobs/venv.sh "$VENV" test,mpi || exit 1
PY="$VENV/bin/python"
MPIEXEC="$VENV/bin/mpiexec"
export OMP_NUM_THREADS=1 PY_COLORS=0
status=0

run_suite() {  # name, command...
  local name=$1; shift
  echo "=== $name: $*"
  "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then echo "=== $name: no tests were collected (pytest exit 5)"; fi
  if [ $rc -ne 0 ]; then echo "=== $name FAILED (exit $rc)"; status=1; else echo "=== $name passed"; fi
}

run_suite "lint" "$VENV/bin/ruff" check mpiclip tests analysis benchmarks
run_suite "serial" timeout 1800 "$PY" -m pytest tests --ignore=tests/mpi -p no:cacheprovider -q -ra
for ranks in 2 4; do
  rm -f mpitest-rank*.log
  run_suite "mpi-$ranks" timeout 900 "$MPIEXEC" -n "$ranks" tests/rank0only.sh "$PY" -m mpi4py -m pytest \
    --with-mpi tests/mpi -p no:cacheprovider -q -ra --timeout=300 --timeout-method=thread --color=no
  if [ $status -ne 0 ]; then
    for f in mpitest-rank*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done
  fi
done
exit $status
