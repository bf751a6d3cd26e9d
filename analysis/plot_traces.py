#!/usr/bin/env python3
"""Plot several mpiclip traces: ‖∇f‖² or f against bits per worker, rounds or wall time; for traces with a simulated
clock (/sim_time: asynchronous runs, runs with a system model) also against simulated time, labelled with its unit
(s, or the asynchronous model's time units); for asynchronous runs against gradients computed, their delay
histograms and per-worker counts. A trace without a clock asked for --x sim_time is refused ("no simulated time").

    python analysis/plot_traces.py results/*.h5 -o fig.png [--x bits|rounds|time|sim_time|gradients]
        [--y grad_norm_sq|loss|gap]
        [--encoding paper|coo32|compact|wire] [--include-initial] [--logx] [--xmax auto|none|X] [--title TEXT]
    python analysis/plot_traces.py results/async-*.h5 -o delays.png --delays       # τ_C and τ_max marked
    python analysis/plot_traces.py results/asgd.h5 -o workers.png --contributions   # applied/discarded per worker

Reads HDF5 traces only (h5py, numpy, matplotlib); it never imports mpi4py. The bits axis is the papers'
#bits/n: cumulative bits per worker sent before x^t, under the chosen encoding (default ``paper``,
32 bits per transmitted value), with the initial round left out unless --include-initial.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip.plotting import SIZES, X_AXES, Y_AXES, contributions, delays, draw, save_checked
from mpiclip.trace import TraceError, load_trace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+", metavar="TRACE")
    ap.add_argument("-o", "--output", required=True, help="figure file (.png, .pdf, .svg)")
    ap.add_argument("--x", choices=X_AXES, default="bits", help="x axis: bits per worker (default), rounds, wall time, "
                    "simulated time (/sim_time, in s or model time units), gradients computed (asynchronous runs), "
                    "communication rounds (federated runs)")
    ap.add_argument("--y", choices=Y_AXES, default="grad_norm_sq")
    ap.add_argument("--encoding", default="paper", help="bit encoding for --x bits (paper, coo32, compact, wire)")
    ap.add_argument("--include-initial", action="store_true", help="add the initial round's bits")
    ap.add_argument("--logx", action="store_true")
    ap.add_argument("--xmax", default="auto", help="end of the x axis: 'auto' (where the shortest trace ends, so "
                    "every curve spans it), 'none' (everything), or a number")
    ap.add_argument("--title")
    ap.add_argument("--size", choices=tuple(SIZES), default="page",
                    help="one column (3.4 in wide) or the page of a two-column paper (7 in); default page")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--delays", action="store_true", help="delay histograms of asynchronous runs")
    kind.add_argument("--contributions", action="store_true", help="gradients per worker of one asynchronous run")
    args = ap.parse_args(argv)
    traces = []
    for path in args.traces:
        if not os.path.isfile(path):
            print(f"plot_traces: error: trace = {path!r}: no such file", file=sys.stderr)
            return 2
        try:
            traces.append(load_trace(path))
        except TraceError as e:
            print(f"plot_traces: error: trace = {path!r}: not a readable HDF5 trace ({e.reason})", file=sys.stderr)
            return 2
    missing = [t.path for t in traces if args.encoding not in t.bits_up]
    if missing:
        print(f"plot_traces: error: --encoding = {args.encoding!r}: not in {missing[0]}", file=sys.stderr)
        return 2
    try:
        xmax = {"auto": "auto", "none": None}.get(args.xmax) or float(args.xmax)
    except ValueError:
        print(f"plot_traces: error: --xmax = {args.xmax!r}: expected 'auto', 'none' or a number", file=sys.stderr)
        return 2
    try:
        if args.delays:
            delays(traces, args.output, title=args.title)
        elif args.contributions:
            contributions(traces[0], args.output, title=args.title)
        else:
            fig = draw(traces, x=args.x, y=args.y, encoding=args.encoding, include_initial=args.include_initial,
                       title=args.title, logx=args.logx, xmax=xmax, size=args.size)
            save_checked(fig, args.output, lambda problem: print(f"plot_traces: warning: {problem}", file=sys.stderr))
    except ValueError as e:
        print(f"plot_traces: error: {e}", file=sys.stderr)
        return 2
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
