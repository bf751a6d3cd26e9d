#!/usr/bin/env python3
"""Privacy-utility trade-off of DP runs: final ‖∇f‖² (or accuracy, loss) against the final ε.

    python analysis/privacy_utility.py TRACE... -o tradeoff.png [--y grad_norm_sq|accuracy|loss]

One line per method; runs with the same method and ε (e.g. several seeds) are averaged, with their
range as error bars. Reads traces only (never imports mpi4py).
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip.plotting import draw_privacy_utility, save_checked
from mpiclip.trace import TraceError, load_trace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--y", default="grad_norm_sq", help="grad_norm_sq, loss, or a per-round metric such as accuracy")
    ap.add_argument("--title")
    args = ap.parse_args(argv)
    missing = [p for p in args.traces if not os.path.isfile(p)]
    if missing:
        print(f"privacy_utility: error: trace = {missing[0]!r}: no such file", file=sys.stderr)
        return 2
    traces = []
    for path in args.traces:
        try:
            traces.append(load_trace(path))
        except TraceError as e:
            print(f"privacy_utility: error: trace = {path!r}: not a readable HDF5 trace ({e.reason})", file=sys.stderr)
            return 2
    try:
        fig = draw_privacy_utility(traces, args.y, args.title)
    except (ValueError, AttributeError) as e:
        print(f"privacy_utility: error: {e}", file=sys.stderr)
        return 2
    print(save_checked(fig, args.output, lambda problem: print(f"privacy_utility: warning: {problem}", file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
