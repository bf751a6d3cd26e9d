"""`mpiclip info | presets | options`: traces, packaged configs and every config key."""

from __future__ import annotations

import sys
from importlib import resources


def add_parsers(sub) -> None:
    info = sub.add_parser("info", help="summarise traces", description="One trace: its metadata, final values, "
                          "bits under every encoding and timing. Several: a comparison table.")
    info.add_argument("traces", nargs="+", metavar="TRACE", help="trace files, or directories: their *.h5 traces "
                      "(checkpoints and hidden temporaries left out), in name order; a directory's trace that cannot "
                      "be read is listed as unreadable, with the reason")
    info.add_argument("--encoding", default="paper", help="bit encoding of the table's bits columns (default paper)")
    info.add_argument("--to", type=float, nargs="+", default=(), metavar="EPS",
                      help="add columns: bits per worker until ‖∇f‖² first reached each EPS (a comparison table)")
    info.set_defaults(func=cmd_info)

    presets = sub.add_parser("presets", help="list the packaged configs, or print one",
                             description="Without NAME, list the presets; with NAME, print its TOML (a starting "
                             "point for your own config).")
    presets.add_argument("name", nargs="?")
    presets.set_defaults(func=cmd_presets)

    options = sub.add_parser("options", help="document every config key",
                             description="Every section and key of a config, with type, default and meaning; "
                             "registry sections list each component's own keys.")
    options.add_argument("section", nargs="?", help="only this section")
    options.set_defaults(func=cmd_options)


def cmd_info(args) -> int:
    import os

    from mpiclip import report
    from mpiclip.results import trace_files
    from mpiclip.trace import TraceError, load_trace

    traces = []  # a Trace, or the TraceError of a directory's trace that cannot be read
    for path in args.traces:
        if os.path.isdir(path):
            found = trace_files(path)
            if not found:
                print(f"mpiclip: error: trace = {path!r}: a directory without traces (*.h5)", file=sys.stderr)
                return 2
            for name in found:  # one unreadable trace among many is a row of the table, not fatal
                try:
                    traces.append(load_trace(name))
                except TraceError as e:
                    traces.append(e)
            continue
        if not os.path.isfile(path):
            print(f"mpiclip: error: trace = {path!r}: no such file", file=sys.stderr)
            return 2
        try:
            traces.append(load_trace(path))
        except TraceError as e:
            print(f"mpiclip: error: trace = {path!r}: not a readable HDF5 trace ({e.reason})", file=sys.stderr)
            return 2
    if all(isinstance(tr, TraceError) for tr in traces):
        first = traces[0]
        print(f"mpiclip: error: trace = {args.traces[0]!r}: no readable trace ({len(traces)} unreadable; "
              f"{os.path.basename(first.path)}: {first.reason})", file=sys.stderr)
        return 2
    if len(traces) == 1 and not args.to:
        print(report.describe(traces[0]))
    else:
        try:
            print(report.comparison(traces, args.encoding, tuple(args.to)))
        except KeyError as e:
            print(f"mpiclip: error: --encoding = {args.encoding!r}: {e.args[0]}", file=sys.stderr)
            return 2
    return 0


def cmd_presets(args) -> int:
    from mpiclip.config import preset_names

    names = preset_names()
    if args.name is None:
        for name in names:
            text = resources.files("mpiclip.presets").joinpath(name + ".toml").read_text()
            first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
            print(f"{name:24s} {first}")
        return 0
    if args.name not in names:
        print(f"mpiclip: error: preset = {args.name!r}: unknown (presets: {', '.join(names)})", file=sys.stderr)
        return 2
    print(resources.files("mpiclip.presets").joinpath(args.name + ".toml").read_text(), end="")
    return 0


def cmd_options(args) -> int:
    from mpiclip import config as cfg
    from mpiclip.compressors import COMPRESSORS
    from mpiclip.data import SOURCES, DataParams
    from mpiclip.data.partition import SPLITS
    from mpiclip.methods import METHODS
    from mpiclip.params import describe
    from mpiclip.problems import PROBLEMS
    from mpiclip.runners import RUNNERS
    from mpiclip.stepsize import StepsizeParams
    from mpiclip.system import SystemParams

    def keys(cls, indent="  "):
        return [f"{indent}{name} ({kind}, default {default!r}): {doc}" for name, kind, default, doc in describe(cls)]

    def registry(reg, selector):
        out = []
        for name, entry in reg.items():
            out.append(f"  {selector} = {name!r}: {reg.doc(name)}")
            out += keys(entry.params, "      ")
        return out

    sections = {
        "run": keys(cfg.RunParams),
        "data": keys(DataParams) + ["  sources:"] + registry(SOURCES, "source") + ["  splits:"] + registry(SPLITS, "split"),
        "problem": registry(PROBLEMS, "name"),
        "method": registry(METHODS, "name"),
        "compressor": registry(COMPRESSORS, "name"),
        "stepsize": keys(StepsizeParams),
    }
    for name, runner in RUNNERS.items():  # the runners' own sections, each once (a runner's modes share it)
        if runner.section and runner.section not in sections:
            sections[runner.section] = [f"  ({name} methods only)"] + keys(runner.params)
    sections["system"] = ["  (every runner; absent: no simulated clock)"] + keys(SystemParams)
    sections["output"] = keys(cfg.OutputParams)
    if args.section and args.section not in sections:
        print(f"mpiclip: error: section = {args.section!r}: unknown (sections: {', '.join(sections)})", file=sys.stderr)
        return 2
    for name, lines in sections.items():
        if args.section in (None, name):
            print(f"[{name}]")
            print("\n".join(lines))
            print()
    return 0
