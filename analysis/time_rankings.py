#!/usr/bin/env python3
"""docs/time's tables and figures: the methods of one EF21 and one federated setting ranked by bits to a target and
by simulated time to it, on the two systems of the time-* sweeps (a datacenter and a mobile fleet).

    python -m mpiclip sweep run time-ef21-mushrooms-datacenter     (and -mobile; time-fed-digits-datacenter, -mobile)
    python analysis/time_rankings.py [--results results/time] [--out docs/time] [--target SETTING=LEVEL ...]

Reads the sweeps' traces (h5py, numpy, matplotlib; never mpi4py); writes <setting>.csv (one row per method and
system), <setting>-<system>.png/.pdf (the target metric against simulated time) and prints the page's tables.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from typing import NamedTuple

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip import results
from mpiclip.plotting import draw, paper_name, save
from mpiclip.trace import load_trace

SYSTEMS = ("datacenter", "mobile")


class Setting(NamedTuple):
    name: str  # the sweeps are time-<name>-<system>
    metric: str  # the trace column a target is set on
    target: float
    larger_is_better: bool
    what: str  # the target in words


SETTINGS = (
    Setting("ef21-mushrooms", "grad_norm_sq", 1e-7, False, "‖∇f‖² ≤ 1e-7"),
    Setting("fed-digits", "test_accuracy", 0.9, True, "test accuracy ≥ 0.9"),
)


def label(trace) -> str:
    method = trace.config["method"]["name"]
    name = paper_name(method)
    compressor = trace.config.get("compressor", {})
    if compressor.get("name", "identity") != "identity":
        name += f", Top-{compressor['k']}"
    return name


def values(trace, metric: str):
    return trace.grad_norm_sq if metric == "grad_norm_sq" else trace.metrics[metric]


def row(trace, s: Setting) -> dict:
    v = values(trace, s.metric)
    to = {axis: results.to_target(trace, s.target, axis, values=v, larger_is_better=s.larger_is_better)
          for axis in ("bits", "sim_time", "rounds")}
    clock = {k: float(trace.metrics[k][-1]) for k in ("sim_time", "sim_compute", "sim_comm", "sim_wait")}
    rounds = int(trace.rounds[-1])
    return {"method": label(trace), "bits_to": to["bits"], "time_to": to["sim_time"], "rounds_to": to["rounds"],
            "rounds": rounds, "s_per_round": clock["sim_time"] / max(rounds, 1),
            "comm_share": clock["sim_comm"] / clock["sim_time"] if clock["sim_time"] else math.nan,
            "wait_share": clock["sim_wait"] / clock["sim_time"] if clock["sim_time"] else math.nan,
            "dropped": int(trace.metrics["sim_dropped"][-1]) if "sim_dropped" in trace.metrics else 0}


def ranks(scores: list[float]) -> list[str]:
    """1 for the smallest score, '-' for a target never reached."""
    order = sorted((x, i) for i, x in enumerate(scores) if not math.isnan(x))
    out = ["-"] * len(scores)
    for r, (_, i) in enumerate(order, 1):
        out[i] = str(r)
    return out


def fmt(x: float, spec: str = ".3g") -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results/time", help="the sweeps' output folder (default results/time)")
    ap.add_argument("--out", default="docs/time", help="where the CSV files and figures go (default docs/time)")
    ap.add_argument("--target", action="append", default=[], metavar="SETTING=LEVEL",
                    help="another target for a setting (ef21-mushrooms=1e-5, fed-digits=0.85)")
    args = ap.parse_args(argv)
    levels = {}
    for item in args.target:
        name, _, level = item.partition("=")
        try:
            levels[name] = float(level)
        except ValueError:
            level = None
        if name not in {s.name for s in SETTINGS} or level is None:
            print(f"time_rankings.py: error: --target = {item!r}: give SETTING=LEVEL with SETTING one of "
                  f"{', '.join(s.name for s in SETTINGS)}", file=sys.stderr)
            return 2
    settings = [s._replace(target=levels[s.name], what=s.what.rsplit(" ", 1)[0] + f" {levels[s.name]:g}")
                if s.name in levels else s for s in SETTINGS]
    files = {}
    for s in settings:  # every sweep's traces are there before anything is written
        for system in SYSTEMS:
            folder = os.path.join(args.results, f"time-{s.name}-{system}")
            files[s.name, system] = results.trace_files([folder]) if os.path.isdir(folder) else []
            if not files[s.name, system]:
                print(f"time_rankings.py: error: {folder}: no traces: run `mpiclip sweep run time-{s.name}-{system}` "
                      "first", file=sys.stderr)
                return 2
    os.makedirs(args.out, exist_ok=True)
    for s in settings:
        rows = []
        for system in SYSTEMS:
            traces = [load_trace(f) for f in files[s.name, system]]
            block = [dict(row(t, s), system=system) for t in traces]
            for key in ("bits_to", "time_to"):
                for r, rank in zip(block, ranks([b[key] for b in block])):
                    r["rank_" + key.split("_")[0]] = rank
            rows += block
            reached = [b["time_to"] for b in block if not math.isnan(b["time_to"])]
            fig = draw(traces, x="sim_time", y=s.metric, xmax=1.25 * max(reached) if reached else None,
                       labels=[label(t) for t in traces], title=f"{s.name}, {system}: {s.metric} against simulated "
                       f"time (target: {s.what}; the axis ends past the last method to reach it)")
            save(fig, [os.path.join(args.out, f"{s.name}-{system}.{ext}") for ext in ("png", "pdf")])
        columns = ["system", "method", "bits_to", "rank_bits", "time_to", "rank_time", "rounds_to", "rounds",
                   "s_per_round", "comm_share", "wait_share", "dropped"]
        with open(os.path.join(args.out, f"{s.name}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows({k: r[k] for k in columns} for r in rows)
        print(f"\n## {s.name}: to {s.what}\n")
        print("| system | method | bits/worker to target | rank | simulated s to target | rank | rounds to target "
              "| s per round | comm | wait | dropped |")
        print("| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |")
        for r in rows:
            print(f"| {r['system']} | {r['method']} | {fmt(r['bits_to'])} | {r['rank_bits']} | {fmt(r['time_to'])} "
                  f"| {r['rank_time']} | {fmt(r['rounds_to'], '.0f')} | {fmt(r['s_per_round'])} "
                  f"| {fmt(r['comm_share'], '.0%')} | {fmt(r['wait_share'], '.0%')} | {r['dropped']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
