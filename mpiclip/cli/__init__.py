"""Command line: ``mpiclip run | info | presets | options | stepsize | privacy | sweep | reproduce``, one module
per command.

Launch runs on several ranks with ``mpiexec -n P python -m mpi4py -m mpiclip run CONFIG``; without a
launcher a run is one process. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from mpiclip import __version__
from mpiclip.cli import info, reproduce, run, sweep, tools

EPILOG = """examples:
  mpiexec -n 4 python -m mpi4py -m mpiclip run quickstart --plot results/quickstart.png
  mpiclip run my.toml --set compressor.k=2 --set stepsize.factor=64
  mpiclip run ef21-libsvm --set data.path=a9a.txt --dry-run
  mpiclip stepsize ef21-libsvm --set data.path=a9a.txt --k 1 2 4 8
  mpiclip info results/*.h5
  mpiclip options compressor
  mpiexec -n 2 python -m mpi4py -m mpiclip reproduce clip21 --data-dir ~/libsvm
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpiclip", description="Communication-efficient and clipped distributed "
                                "optimization on MPI ranks, with HDF5 traces.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mpiclip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module in (run, info, tools, sweep, reproduce):
        module.add_parsers(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit, a write fails (and the run says so) instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return args.func(args)
    except BrokenPipeError:  # `mpiclip info … | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush is silent
        return 128 + signal.SIGPIPE
