"""Runners, one loop each (docs/design.md §9). Each method names the runner that drives it (``Method.runner``).

A runner's module is imported when the runner is first looked up (``Registry.declare``): a synchronous run never
imports the asynchronous or federated loops. ``DECLARED`` also says which config section and tables each runner
has, so that the config's sections and a trace's tables are known without importing any loop; a runner
registered from outside the package is read from its class (``runner_facts``).
"""

from typing import NamedTuple

from mpiclip.runners.base import RUNNERS, Control, Ledger, Runner, RunState, Setup, Table
from mpiclip.runners.tables import CLIENTS, EVENTS


class Facts(NamedTuple):
    """What the configuration and the trace readers need to know of a runner, its loop not imported."""

    module: str  # the module that registers it
    section: str = ""  # its config section ("" for none): Runner.section
    tables: tuple[Table, ...] = ()  # Runner.tables


DECLARED = {
    "synchronous": Facts(f"{__name__}.synchronous"),
    "asynchronous": Facts(f"{__name__}.asynchronous", "async", (EVENTS,)),
    "asynchronous-real": Facts(f"{__name__}.asynchronous_real", "async", (EVENTS,)),
    "federated": Facts(f"{__name__}.federated", "federated", (CLIENTS,)),
}
for _name, _facts in DECLARED.items():
    RUNNERS.declare(_facts.module, [_name])


def runner_facts() -> dict[str, Facts]:
    """name -> Facts of every runner, in the registry's order, importing none that is declared."""
    def of(runner) -> Facts:
        return Facts(runner.__module__, runner.section, tuple(runner.tables))

    return {name: DECLARED[name] if name in DECLARED else of(RUNNERS.get(name, "runner")) for name in RUNNERS}


__all__ = ["RUNNERS", "Control", "Ledger", "Runner", "RunState", "Setup", "DECLARED", "runner_facts"]
