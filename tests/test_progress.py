"""Progress reports: the durations people read, the JSON lines batch jobs read, and the unit of each runner."""

import json
import math

import pytest
from helpers import METHOD_CASES, config_table

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm.serial import SerialComm
from mpiclip.errors import InputError
from mpiclip.progress import Log, duration


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.04, 8.25, 59.94, 185, 3599, 7440, math.nan)] == \
        ["0.0 s", "8.2 s", "59.9 s", "3 min 05 s", "59 min 59 s", "2 h 04 min", "?"]


def test_json_lines_are_valid_json_with_null_for_non_finite_numbers(tmp_path):
    path = tmp_path / "log.jsonl"
    log = Log(lambda line: None, str(path))
    log.event("progress", "r", t=3, loss=math.nan, grad_norm_sq=math.inf, rate=2.5)
    log.event("end", "r", status="failed: diverged at round 3")
    log.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["loss"] is None and first["grad_norm_sq"] is None and first["rate"] == 2.5 and first["t"] == 3
    assert second["event"] == "end" and second["run"] == "r" and second["at"].endswith("+00:00")


def test_an_unwritable_json_log_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="--log-json"):
        Log(print, str(tmp_path / "missing" / "log.jsonl"))


@pytest.mark.parametrize("name, unit", [("ef21", "round"), ("asgd", "update"), ("fedavg", "round")])
def test_each_runner_reports_in_its_own_unit(tmp_path, name, unit):
    table = config_table(run={"name": name, "n_workers": 4, "rounds": 12, "eval_every": 3}, **METHOD_CASES[name])
    table["output"] = {"path": str(tmp_path / f"{name}.h5")}
    lines = []
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", Log(lines.append, every=0))
    session.execute(prepared)
    assert [ln.split()[:2] for ln in lines] == [[unit, f"{t}/12"] for t in (0, 3, 6, 9, 12)]
