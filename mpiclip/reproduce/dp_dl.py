"""Clip21-SGD2M under differential privacy on a deep network (`mpiclip reproduce dp-dl`): against DP-SGD and
DP-Clip-SGD at ε ∈ {3, 5.2, 9, 15.6, 27}, δ = 1e-3, record- and worker-level, a CNN on MNIST; and without
noise on CIFAR-10 (Islamov, Horváth, Lucchi, Richtárik, Gorbunov, arXiv 2502.11682)."""

from __future__ import annotations

import numpy as np

from mpiclip import plotting
from mpiclip.reproduce import Family
from mpiclip.reproduce.deep import comparison, costs, laptop, lookup, score

UNITS = {"replace": "record-level", "add_remove_record": "record-level (add/remove)", "add_remove": "worker-level"}


def label(b) -> str:
    name = {"clip_sgd": "DP-Clip-SGD"}.get(b.values["method.name"], plotting.paper_name(b.values["method.name"]))
    if "method.target_epsilon" not in b.values:
        return name.replace("DP-", "")
    return f"{name}, ε = {b.values['method.target_epsilon']:g}, {UNITS[b.values['method.relation']]}"


def write(page, sweeps: dict) -> None:
    page.text("The Clip21-SGD2M paper trains a CNN on MNIST privately, against DP-SGD (per-example clipping) and "
              "DP-Clip-SGD, and CIFAR-10 without noise. The laptop preset makes the same comparison on scikit-learn's "
              "digits with a small CNN, at two of the budgets.")
    for name, sweep in sweeps.items():
        page.heading(name)
        private = any(key == "method.target_epsilon" for run in sweep.runs[:1] for key, _ in run.values)
        if not private:
            best = comparison(page, name, sweep, "rounds", label)
            ours, others = lookup(best, method__name="clip21_sgd2m"), [b for b in best if b.traces and
                                                                         b.values["method.name"] != "clip21_sgd2m"]
            if ours and others:
                leader = max(others, key=lambda b: b.score)
                page.text(f"Without noise Clip21-SGD2M ends at {score(ours)} against {label(leader)}'s {score(leader)}.")
            continue
        best = comparison(page, name, sweep, "rounds", label)
        for relation, unit in UNITS.items():
            chosen = [tr for b in best if b.traces and b.values["method.relation"] == relation for tr in b.traces]
            if chosen:
                page.figure(f"{name}-{relation}-frontier", plotting.draw_privacy_utility(
                    chosen, y="test_accuracy", title=f"{plotting.dataset_name(sweep.runs[0].config)}, "
                    f"{unit} DP: final test accuracy of each method's best setting"))
        verdicts, wins = [], 0
        for b in best:
            if b.values["method.name"] != "clip21_sgd2m" or not b.traces:
                continue
            where = {"method__relation": b.values["method.relation"], "method__target_epsilon": b.values["method.target_epsilon"]}
            rivals = [r for r in (lookup(best, method__name=m, **where) for m in ("dp_sgd", "clip_sgd")) if r]
            if rivals:
                leader = max(rivals, key=lambda r: r.score)
                wins += b.score > leader.score
                verdicts.append(f"{label(b)}: {score(b)} against {plotting.paper_name(leader.values['method.name'])}'s "
                                f"{score(leader)}")
        if verdicts:
            ours = [b for b in best if b.traces and b.values["method.name"] == "clip21_sgd2m"]
            worst = max(float(np.mean([tr.loss[-1] for tr in b.traces])) for b in ours)
            why = (f" Its train loss reaches {worst:.3g}: the server's estimate g adds up the noise of every message "
                   "(error feedback keeps what it sent), so the noise of the private runs accumulates in the iterate."
                   if worst > 100 else "")
            page.text("Clip21-SGD2M against the better baseline, final test accuracy: " + "; ".join(verdicts) +
                      f". It is ahead in {wins} of {len(verdicts)} budgets: the paper's claim (better utility at equal "
                      f"privacy) {'shows' if wins * 2 > len(verdicts) else 'does not show'} at laptop size.{why} At full "
                      "size: MNIST with 20 workers for 60 epochs, five budgets and both units, 180 runs.")
    costs(page, "dp-dl", "MNIST's idx files in DIR/mnist, CIFAR-10's cifar-10-batches-py in DIR")


FAMILY = Family(
    name="dp-dl", title="Clip21-SGD2M on deep networks, with and without privacy", docs="docs/dp-dl", write=write,
    runs_per_task=1,
    sweeps=("dp-dl-mnist", "dp-dl-cifar10"),
    laptop={
        # a quarter of a worker's rows per step and 100 steps: less noise for the same budget than small batches
        "dp-dl-mnist": laptop(grids=({"method.target_epsilon": [3.0, 15.6]},), rounds=100, eval_every=10,
                              keys={"method.batch": 0.25, "run.n_workers": 5}),
        "dp-dl-cifar10": laptop(grids=({"stepsize.value": [0.1, 0.3]},), rounds=100, eval_every=10,
                                keys={"method.batch": 0.25, "run.n_workers": 5}),
    },
)
