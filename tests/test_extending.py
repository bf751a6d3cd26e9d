"""A newcomer extends mpiclip from outside the package: a runner is one module and its registration (its method
protocol, config section, trace table and checks declared next to its loop), a method implements only the
protocol of its runner, and every registered method does."""

import json
import os
import subprocess
import sys
import textwrap

from helpers import REPO

from mpiclip.methods import METHODS
from mpiclip.runners import RUNNERS

# The whole toy runner: every round one worker (in turns) sends its gradient and the server steps with it.
TOY = textwrap.dedent('''
    """Round robin: worker (t·stride mod n) sends ∇f_w(x^t), the server steps x ← x − γ g (a toy runner)."""

    import time
    from dataclasses import dataclass
    from typing import ClassVar

    import numpy as np

    from mpiclip.compressors.message import dense_bits
    from mpiclip.methods.base import METHODS
    from mpiclip.params import at_least, param
    from mpiclip.runners.base import RUNNERS, Ledger, Runner, RunState, Table, end_status, exact_row
    from mpiclip.runners.protocol import Method


    @dataclass(frozen=True)
    class TurnParams:
        stride: int = param(1, "workers between one turn and the next", check=at_least(1))


    @dataclass(frozen=True)
    class TurnMethod(Method):
        """The protocol: what the server does with the gradient of the worker whose turn it is."""

        runner: ClassVar[str] = "turns"
        default_rule: ClassVar[str] = "inverse_L"
        default_compressor: ClassVar[str] = "identity"

        def step(self, x, g):
            raise NotImplementedError


    @METHODS.register("turn_gd")
    @dataclass(frozen=True)
    class TurnGD(TurnMethod):
        """Gradient steps with one worker's gradient at a time."""

        def step(self, x, g):
            return x - self.gamma * g


    @RUNNERS.register("turns")
    class TurnsRunner(Runner):
        """Rounds in which one worker, in turns, sends its gradient."""

        protocol = TurnMethod
        section = "turns"
        params = TurnParams
        tables = (Table("turns", units="worker id"),)
        phases = ("gradient", "evaluation", "trace")

        @classmethod
        def table_width(cls, config, table):
            return 1

        def start(self, state):
            s = self.setup
            if state is None:
                state = RunState(0, s.x0.copy(), None, None, Ledger.empty(len(s.worker_ids)))
            self.started = time.perf_counter() - state.elapsed
            return state

        def advance(self, state):
            s, run, t = self.setup, self.setup.config.run, state.t
            if t % run.eval_every == 0 or t == run.rounds:
                losses, grads = s.problem.loss_grads(state.x, True)
                row = exact_row(s, state, grads, losses)
                status = end_status(run, t, row)
                if status == "running" and s.control.stop:
                    return state
                s.recorder.add_row(state.ledger, t, self.elapsed(), row.loss, row.grad_norm_sq, row.scores)
                s.recorder.set_metrics({})
                if s.recorder.full:
                    s.recorder.flush(state.ledger)
                self.recorded(state, row, status, time.perf_counter())
                if status != "running":
                    return state
            worker = (t * s.config.section("turns").stride) % run.n_workers
            s.recorder.add("turns", [worker])
            rows, up = np.zeros((len(s.worker_ids), len(state.x))), np.zeros((len(s.worker_ids), 4))
            mine = np.flatnonzero(s.worker_ids == worker)
            if len(mine):
                rows[mine[0]] = s.problem.worker_grad(state.x, int(mine[0]))
                up[mine[0]] = dense_bits(len(state.x))
            state.x = s.method.step(state.x, s.comm.sum_rows(rows, True))
            state.ledger.count(up, np.zeros(4))
            state.t = t + 1
            return state
    ''')

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import toy_runner  # registration: the only step besides the module
    import numpy as np
    from mpiclip import config as cfg, session
    from mpiclip.comm import SerialComm
    from mpiclip.problems import PROBLEMS
    from mpiclip.trace import load_trace

    table = {"run": {"name": "toy", "n_workers": 4, "rounds": 9, "eval_every": 2}, "problem": {"name": "quadratic", "d": 5},
             "method": {"name": "turn_gd"}, "turns": {"stride": 3}, "stepsize": {"rule": "constant", "value": 0.2},
             "output": {"path": os.path.join(sys.argv[1], "{name}.h5"), "exists": "overwrite"}}
    config = cfg.validate(table)
    (s,) = session.prepare_all([config], SerialComm(), log=lambda *a: None)
    result = session.execute(s)
    tr = load_trace(config.trace_path)
    with __import__("h5py").File(config.trace_path) as f:
        turns = f["turns"][()].ravel().tolist()
    # the same iteration by hand, on the same problem
    problem = PROBLEMS.get("quadratic", "").build(config.problem.params, None, np.arange(4), 4)
    x = s.x0.copy()
    for t in range(9):
        x = x - 0.2 * problem.worker_grad(x, (3 * t) % 4)
    try:
        cfg.validate({**table, "turns": {"stride": 0}})
        refused = ""
    except Exception as e:
        refused = str(e)
    try:
        cfg.validate({**table, "method": {"name": "ef21"}})
        foreign = ""
    except Exception as e:
        foreign = str(e)
    print(json.dumps({"status": result.status, "turns": turns, "x": tr.attrs.get("status"), "close": float(np.abs(
        __import__("h5py").File(config.trace_path)["x_final"][()] - x).max()), "config": json.loads(tr.attrs["config"]),
        "refused": refused, "foreign": foreign, "bits": tr.bits_per_worker("paper")[-1]}))
    ''')


def test_a_toy_runner_from_outside_the_package_is_one_module_and_its_registration(tmp_path):
    (tmp_path / "toy_runner.py").write_text(TOY)
    (tmp_path / "run_toy.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(tmp_path / "run_toy.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"].startswith("completed")
    assert out["turns"] == [(3 * t) % 4 for t in range(9)]  # its own table, one row per round
    assert out["close"] == 0.0  # the loop is the iteration written by hand
    assert out["config"]["turns"] == {"stride": 3}  # its own section, in the trace's config
    assert out["refused"] == "turns.stride = 0: must be >= 1"
    assert out["foreign"] == ("turns = {stride}: method 'ef21' runs on the synchronous runner; [turns] is for the "
                              "turns methods (turn_gd)")
    assert out["bits"] == 9 * 32 * 5 / 4  # one dense message per round, over 4 workers
    options = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import toy_runner; "
                              "from mpiclip.cli import main; sys.exit(main(['options', 'turns']))", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert options.returncode == 0 and "stride (integer, default 1)" in options.stdout, options.stderr


def test_every_method_implements_the_protocol_of_its_runner_and_only_that_one():
    protocols = {name: runner.protocol for name, runner in RUNNERS.items()}
    for name, method in METHODS.items():
        assert issubclass(method, protocols[method.runner]), name
        assert sum(issubclass(method, p) for p in set(protocols.values())) == 1, name
    runner_modules = {runner.__module__ for _, runner in RUNNERS.items()}
    for _, runner in RUNNERS.items():  # a runner declares its protocol in its own module (or its mode's)
        assert runner.protocol.__module__ in runner_modules


def test_the_toy_runner_needs_no_edit_of_the_house():
    """The files a runner registers into (config sections, options, the trace's tables, checkpoints) read the
    registry: none names the runners it knows."""
    for path in ("config.py", "session.py", "trace.py", "recorder.py", "checkpoint.py", "cli/info.py"):
        text = open(os.path.join(REPO, "mpiclip", path)).read()
        for word in ("config.asynchrony", "AsyncParams", "FederatedParams", "add_event", "add_clients", '"clients"'):
            assert word not in text, (path, word)


def test_every_module_imports_first_and_no_runner_imports_a_method():
    """No import cycle hides behind the order in which modules happen to load: each module of the package is
    imported first into an interpreter with no mpiclip module loaded. Methods build on their runners'
    protocols, so a runner module that imported the methods would close a cycle."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import mpiclip
        names = sorted(m.name for m in pkgutil.walk_packages(mpiclip.__path__, "mpiclip.") if m.name != "mpiclip.__main__")
        failed, methods_from_runner = [], []
        for name in names:
            for loaded in [k for k in sys.modules if k.startswith("mpiclip")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception as e:
                failed.append(f"{name}: {e}")
        for name in [n for n in names if n.startswith("mpiclip.runners")]:
            for loaded in [k for k in sys.modules if k.startswith("mpiclip")]:
                del sys.modules[loaded]
            sys.modules["mpiclip.methods"] = None  # importing it now fails
            try:
                importlib.import_module(name)
            except ImportError as e:
                methods_from_runner.append(f"{name}: {e}")
            del sys.modules["mpiclip.methods"]
        print(len(names)); print("\\n".join(failed)); print("--"); print("\\n".join(methods_from_runner))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    count, rest = out.stdout.split("\n", 1)
    failed, methods_from_runner = rest.split("--\n")
    assert int(count) > 80 and failed.strip() == "", failed
    assert methods_from_runner.strip() == "", methods_from_runner


def test_the_session_declares_what_each_stage_makes_in_one_place():
    """Every attribute a Session stage sets is declared in __init__ (a reader sees the whole state at once)."""
    import ast

    tree = ast.parse(open(os.path.join(REPO, "mpiclip", "session.py")).read())
    (session,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Session"]

    def assigned(function) -> set:
        names = set()
        for node in ast.walk(function):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                        names.add(leaf.attr)
        return names

    methods = [node for node in session.body if isinstance(node, ast.FunctionDef)]
    declared = assigned(next(m for m in methods if m.name == "__init__"))
    later = set().union(*(assigned(m) for m in methods if m.name != "__init__"))
    assert later and later <= declared, sorted(later - declared)


# The package's layers, bottom up: a module imports from its own layer and the layers below, and the few
# upward edges a layer may take are named. (Folders would show the layers too, but would move every import
# path users and their scripts rely on; this map is checked instead.)
LAYERS = {
    "foundation": {"errors", "registry", "params", "limits", "paths", "progress", "provenance", "rng", "wire",
                   "clipping", "writer_lock", "grid"},
    "math and data": {"data", "models", "nn", "problems", "compressors", "stepsize", "privacy", "asynchrony", "system",
                      "federation", "oracles", "constants_cache"},
    "algorithms": {"runners", "methods"},
    "traces": {"trace", "trace_contract", "results"},
    "configuration": {"config"},
    "output": {"plotting", "report", "frames", "sweep", "reproduce"},
    "run": {"comm", "session", "recorder", "checkpoint", "sweep_run", "cli", "__main__"},
}
UPWARD = {("runners", "trace")}  # an asynchronous replay reads the schedule of an earlier trace
COMMUNICATOR_USERS = {"session", "recorder", "sweep_run", "cli", "comm"}  # runners get it from the session


def _imports() -> dict:
    """unit -> the units it imports (module-level or late; not under TYPE_CHECKING)."""
    import ast
    import pathlib

    root = pathlib.Path(REPO) / "mpiclip"
    graph: dict = {}
    for path in root.rglob("*.py"):
        unit = path.relative_to(root).parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mpiclip"):
                names = [node.module] if node.module != "mpiclip" else [f"mpiclip.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("mpiclip")]
            else:
                continue
            for name in names:
                target = name.split(".")[1] if "." in name else ""
                if target and target != unit and target not in ("__version__", "SCHEMA_VERSION"):
                    graph.setdefault(unit, set()).add(target)
    return graph


def test_the_layers_point_one_way_and_the_communicator_stays_in_the_run_layer():
    graph = _imports()
    layer_of = {unit: i for i, units in enumerate(LAYERS.values()) for unit in units}
    units = {u for u in graph} | {t for ts in graph.values() for t in ts}
    assert units - {""} <= set(layer_of), sorted(units - set(layer_of))  # every module has a layer
    upward = {(a, b) for a, targets in graph.items() for b in targets if layer_of[b] > layer_of[a]}
    assert upward <= UPWARD, sorted(upward - UPWARD)
    assert {a for a, targets in graph.items() if "comm" in targets} <= COMMUNICATOR_USERS
    assert "methods" not in graph["runners"] and not graph["methods"] & {"session", "config", "cli", "trace", "comm"}
