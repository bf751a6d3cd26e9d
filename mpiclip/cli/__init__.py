"""Command line: ``mpiclip run | info | presets | options | stepsize | privacy | sweep | reproduce``, one module
per command.

Launch runs on several ranks with ``mpiexec -n P python -m mpi4py -m mpiclip run CONFIG``; without a
launcher a run is one process. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys

from mpiclip import __version__

EPILOG = """examples:
  mpiexec -n 4 python -m mpi4py -m mpiclip run quickstart --plot results/quickstart.png
  mpiclip run my.toml --set compressor.k=2 --set stepsize.factor=64
  mpiclip run ef21-libsvm --set data.path=a9a.txt --dry-run
  mpiclip stepsize ef21-libsvm --set data.path=a9a.txt --k 1 2 4 8
  mpiclip info results/*.h5
  mpiclip options compressor
  mpiexec -n 2 python -m mpi4py -m mpiclip reproduce clip21 --data-dir ~/libsvm
"""


# command -> the module mpiclip.cli.<module> that adds its parser, in the help's order
COMMANDS = {"run": "run", "info": "info", "presets": "info", "options": "info", "stepsize": "tools", "privacy": "tools",
            "sweep": "sweep", "reproduce": "reproduce"}
MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser of every command; with ``argv`` naming a command first, of that command alone (start-up: the
    other commands' modules are not imported nor their parsers built). Help, --version and a mistyped command get
    them all."""
    p = argparse.ArgumentParser(prog="mpiclip", description="Communication-efficient and clipped distributed "
                                "optimization on MPI ranks, with HDF5 traces.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mpiclip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = argv[0] if argv else None
    for module in (COMMANDS[command],) if command in COMMANDS else MODULES:
        importlib.import_module(f"{__name__}.{module}").add_parsers(sub)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit, a write fails (and the run says so) instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return args.func(args)
    except BrokenPipeError:  # `mpiclip info … | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush is silent
        return 128 + signal.SIGPIPE


def program() -> int:
    """The program's entry (``python -m mpiclip``, the ``mpiclip`` script): ``main``, and then an exit that skips
    the collection of what the run imported."""
    try:
        return main()
    finally:
        # Python's finalization runs the cyclic garbage collector over every object still alive, more than once:
        # 60-100 ms for the ~40,000 objects of numpy, scipy and h5py here (66 ms off a 2-rank 0-round run).
        # Frozen objects are skipped. Nothing is lost: every trace and checkpoint is closed by now, and atexit
        # handlers (MPI_Finalize, HDF5's own close) still run. Not in main: in a long-lived process (the tests,
        # a notebook) frozen objects would never be collected.
        gc.freeze()
