"""Registries that import their modules on first use: each package's table names exactly what its modules
register, in the listing order, and a run imports only the components it uses."""

import json
import subprocess
import sys

import pytest

from mpiclip.errors import InputError
from mpiclip.registry import Registry

TOYS = Registry("toy")  # the last test's registry, which its module file imports

# every registry whose package declares its modules, and those tables
DECLARING = {
    "mpiclip.methods": "METHODS",
    "mpiclip.problems": "PROBLEMS",
    "mpiclip.data": "SOURCES",
    "mpiclip.compressors": "COMPRESSORS",
}


def _fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("package", sorted(DECLARING))
def test_each_declared_module_registers_exactly_its_names_in_order(package):
    """In a fresh process, the names each declared module registers (the classes defined in it, in their registration
    order, whether the package imported it itself or a lookup did) are the ones declared for it; and the listing
    order is the declared one."""
    registry = DECLARING[package]
    code = f"""
import importlib, json, {package} as pkg
reg = pkg.{registry}
listed = list(reg)
modules = list(dict.fromkeys(reg._declared.values()))
for module in modules:
    importlib.import_module(module)
added = {{m: [n for n, cls in reg._entries.items() if cls.__module__ == m] for m in modules}}
declared = {{m: [n for n, mm in reg._declared.items() if mm == m] for m in modules}}
print(json.dumps({{"listed": listed, "all": list(reg), "added": added, "declared": declared}}))
"""
    out = _fresh(code)
    assert out["listed"] == out["all"]  # importing everything changes no listing
    assert out["added"] == out["declared"]


def test_a_run_imports_only_its_own_components():
    """Loading the EF21 preset imports the EF21 family, the logistic problem, the synchronous runner and the
    sparsifiers, no other method, problem, runner or compressor module, no image sources and, without [system], no
    clock model (start-up time: docs/design.md); nor does reading its
    trace back import another runner (the trace readers know every runner's tables from runners.DECLARED)."""
    code = """
import json, sys
from mpiclip import config, trace_contract
config.load("ef21-libsvm", ["data.path='a9a.txt'"])
assert {t.name for t in trace_contract.registered_tables()} == {"events", "clients"}
print(json.dumps([sorted(m for m in sys.modules if m.startswith(("mpiclip.methods.", "mpiclip.problems.", "mpiclip.data.vision",
                                                                  "mpiclip.runners.", "mpiclip.compressors."))),
                  sorted(m for m in ("mpiclip.system", "mpiclip.asynchrony", "mpiclip.oracles") if m in sys.modules)]))
"""
    components, clock_models = _fresh(code)
    assert clock_models == []  # no [system]: neither its model nor the asynchronous clock is imported
    assert components == ["mpiclip.compressors.base", "mpiclip.compressors.message", "mpiclip.compressors.sparsifiers",
                          "mpiclip.methods.base", "mpiclip.methods.ef21", "mpiclip.problems.base",
                          "mpiclip.problems.linear", "mpiclip.problems.logreg", "mpiclip.runners.base",
                          "mpiclip.runners.chunks", "mpiclip.runners.protocol", "mpiclip.runners.synchronous",
                          "mpiclip.runners.tables"]


def test_the_declared_runners_facts_are_their_classes():
    """runners.DECLARED says what each declared runner's class says: its module, config section and tables; and
    runner_facts reads a runner registered from outside the package from its class."""
    from mpiclip.runners import DECLARED, RUNNERS, Facts, Runner, runner_facts

    assert list(DECLARED) == list(RUNNERS)[: len(DECLARED)]
    for name, facts in DECLARED.items():
        runner = RUNNERS.get(name, "runner")
        assert facts == Facts(runner.__module__, runner.section, tuple(runner.tables)), name
    try:
        @RUNNERS.register("toy-runner")
        class ToyRunner(Runner):
            section = "toy"

        assert runner_facts()["toy-runner"] == Facts(__name__, "toy", ())
    finally:
        RUNNERS._entries.pop("toy-runner", None)


def test_lazy_exports_and_unknown_names():
    import mpiclip.problems as problems

    assert problems.Quadratic.name == "quadratic"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        problems.Nothing  # noqa: B018


def test_declared_names_are_listed_and_validated_without_import_and_checked_when_imported(tmp_path, monkeypatch):
    """A declared name is listed and known before its module is imported; a module that does not register what
    it was declared for is an error naming both, and an unknown name lists the declared ones."""
    module = tmp_path / "toy_components.py"
    module.write_text("from test_registry import TOYS\nfrom mpiclip.registry import NoParams\n"
                      "@TOYS.register('one')\nclass One:\n    params = NoParams\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    TOYS.declare("toy_components", ("one", "two"))
    assert list(TOYS) == ["one", "two"] and "two" in TOYS and "toy_components" not in sys.modules
    assert TOYS.get("one", "toy").__name__ == "One"
    with pytest.raises(RuntimeError, match="toy_components was declared to register toy 'two' and did not"):
        TOYS.get("two", "toy")
    with pytest.raises(InputError, match=r"unknown toy \(valid: one, two\)"):
        TOYS.get("three", "toy")
    with pytest.raises(ValueError, match="declared twice"):
        TOYS.declare("elsewhere", ("one",))

