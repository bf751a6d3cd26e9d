#!/usr/bin/env bash
# Make, or reuse, a virtual environment with this checkout installed (editable) and the given extras.
#   usage: jobs/venv.sh VENV EXTRAS        e.g. jobs/venv.sh .venv mpi,plot   (PYTHON chooses the interpreter)
# A working environment is reused without calling pip (so that a compute node without network runs from it):
# jobs/venv_check.py checks that mpiclip imports from this checkout at its version, that the requirements of
# the package and of EXTRAS are installed, and that pyproject.toml has not changed since the install. Only
# otherwise is pip run, once, and the result checked again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1
EXTRAS=$2
if [ ! -e "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "" 2>/dev/null; then
  echo "error: $VENV/bin/python does not run (was the environment moved, or its Python removed?): delete $VENV" \
       "to make it again" >&2
  exit 1
fi
if reason=$("$VENV/bin/python" -I jobs/venv_check.py "$PWD" "$EXTRAS"); then
  exit 0
fi
echo "$VENV: $reason; installing mpiclip[$EXTRAS] with pip" >&2
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"; then
  echo "error: pip could not install mpiclip[$EXTRAS] into $VENV (without network, set it up once where there is" \
       "network: a working environment is reused offline)" >&2
  exit 1
fi
if ! reason=$("$VENV/bin/python" -I jobs/venv_check.py "$PWD" "$EXTRAS" --stamp); then
  echo "error: $VENV is not usable after the install: $reason" >&2
  exit 1
fi
