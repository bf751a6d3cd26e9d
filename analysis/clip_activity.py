#!/usr/bin/env python3
"""Heat map of clipping activity (worker × round) of a clipping run's trace.

    python analysis/clip_activity.py TRACE -o activity.png [--metric clip_active|norm_before_clip|residual]

Reads the trace only (never imports mpi4py).
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip.plotting import activity
from mpiclip.trace import load_trace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--metric", default="clip_active")
    ap.add_argument("--title")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.trace):
        print(f"clip_activity: error: trace = {args.trace!r}: no such file", file=sys.stderr)
        return 2
    try:
        print(activity(load_trace(args.trace), args.output, args.metric, args.title))
    except ValueError as e:
        print(f"clip_activity: error: --metric = {args.metric!r}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
