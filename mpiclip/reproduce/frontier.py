"""The privacy–utility frontier (Islamov, Horváth, Lucchi, Richtárik, Gorbunov, 2025, Clip21-SGD2M;
docs/algorithms.md §5, §6): Clip21-SGD2M against DP-Clip-SGD (with and without momentum), DP-SGD with per-example
clipping and DP-Clip21-GD at equal (ε, δ = 1/N) on mushrooms and a9a.

Per sweep and privacy unit (record-level "replace" and "add_remove_record", worker-level "add_remove"; in the
order of ``UNITS``, others after): for every method and budget ε,
the hyper-parameters (τ, step-size factor, momentum) with the best mean final f over the seeds; a table of the
final ‖∇f‖², f and training accuracy there (mean and range over the seeds), figures of the three against ε
(bars: the range), and Clip21-SGD2M's difference in f to the best baseline and to DP-Clip21-GD at each ε,
with its accuracy beside the best baseline accuracy. Points are
chosen by f, not ‖∇f‖²: a noisy run that drifts far from 0 has a small ‖∇f‖² (the logistic gradient is
bounded and the regulariser's vanishes) at a large f. All ε come from the RDP accountant, the one every
method can use.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mpiclip import plotting, results
from mpiclip.reproduce import Cut, Family
from mpiclip.reproduce.page import Spread

TUNED = ("tau", "beta", "beta1", "beta2", "batch")  # method parameters a frontier point is tuned over (and the factor)
MEASURES = (("grad_norm_sq", "‖∇f‖²", ".3g"), ("loss", "f", ".5g"), ("accuracy", "accuracy", ".4f"))
OURS, EF_BASELINE = "clip21_sgd2m", "clip21_gd"


def final(tr, key: str) -> float:
    return float(plotting.y_values(tr, key)[-1])


def settings_of(config) -> tuple:
    p = config.method.params
    return tuple((k, getattr(p, k)) for k in TUNED if hasattr(p, k)) + (("factor", config.stepsize.factor),)


DOMAIN_END = {"beta": 1.0, "beta1": 1.0, "beta2": 1.0, "batch": 1.0}  # a setting that cannot go past this value
# Methods whose run depends on γτ alone while every message is clipped: the message is τ·(a unit vector) plus noise
# of standard deviation zΔ with Δ ∝ τ, and the server's update is linear in the messages; so (τ/10, 10γ) gives the
# run of (τ, γ), and τ → 0 at a fixed γτ is sign-like descent. Error feedback (Clip21) is not of this kind: its
# buffer scales with τ, the gradient it is compared with does not.
SCALE_FREE_WHEN_CLIPPED = ("clip_gd", "clip_sgd", "clip_sgdm", "dp_sgd")
ALL_CLIPPED = 0.999  # a run whose recorded messages (examples, for DP-SGD) were clipped at least this often


def open_sides(best: tuple, searched: set) -> list:
    """[(key, side)] for each tuned setting of ``best`` with no searched setting beyond it on that ``side``
    ("below" or "above") at the same values of the others: the sides a better setting could still lie on. A key
    counts as tuned where the group searched more than one value of it."""
    out = []
    for i, (key, value) in enumerate(best):
        if len({s[i][1] for s in searched}) < 2:
            continue
        along = [s[i][1] for s in searched if all(s[j] == best[j] for j in range(len(best)) if j != i)]
        out += [(key, side) for side, beyond in (("below", min(along) < value), ("above", max(along) > value))
                if not beyond]
    return out


def why_edge(method: str, key: str, side: str, value: float, trs: list) -> str:
    """Why the best setting may lie on this edge and still be the optimum, or '' when nothing says so."""
    start = float(np.mean([tr.loss[0] for tr in trs]))
    if float(np.mean([final(tr, "loss") for tr in trs])) >= start:
        return f"no setting improves on x⁰ (f = {start:.4g}): the optimum is no training, which no grid holds"
    if side == "above" and DOMAIN_END.get(key) == value:
        return f"{key} = {value:g} is the end of its range"
    if key == "tau" and side == "below" and method in SCALE_FREE_WHEN_CLIPPED:
        clipped = float(np.mean([np.nanmean(tr.workers["clip_active"]) for tr in trs]))  # the final x sent nothing
        if clipped >= ALL_CLIPPED:
            return (f"every message clipped ({clipped:.4f}): only γτ matters, and τ → 0 at that γτ is sign-like "
                    "descent, the same run")
    return ""


def described(settings: tuple, edges: dict) -> str:
    """'tau 0.01†, factor 0.3*': * marks a value on an edge of the search that nothing explains (the best may lie
    beyond it), † one on an edge for a reason (listed under the table)."""
    def mark(key):
        reasons = [why for (k, _), why in edges.items() if k == key]
        return "" if not reasons else "*" if not all(reasons) else "†"
    return ", ".join(f"{k} {v:g}{mark(k)}" for k, v in settings)


def searched_settings(sweep) -> dict:
    """(relation, method, ε) -> the settings the sweep's grids search (a run that failed was searched too)."""
    out = defaultdict(set)
    for point in sweep.runs:
        p = point.config.method.params
        out[(p.relation, point.config.method.name, p.target_epsilon)].add(settings_of(point.config))
    return out


def best_points(sweep) -> dict:
    """relation -> {(method, ε): (settings, traces over the seeds)} at the best mean final f."""
    groups = defaultdict(list)  # (relation, method, ε, settings) -> traces over the seeds
    for r in results.runs(sweep):
        groups[(r.param("relation"), r.method, r.param("target_epsilon"), settings_of(r.config))].append(r.trace)
    chosen = results.select(groups.items(), lambda g: g[0][:3], lambda g: np.mean([final(tr, "loss") for tr in g[1]]))
    best = defaultdict(dict)
    for (relation, method, eps), ((_, _, _, settings), trs) in chosen.items():
        best[relation][(method, eps)] = (settings, trs)
    return dict(best)


def spread(values: list, fmt: str) -> Spread:
    """'mean (least–largest)' over the seeds (the mean alone for one)."""
    low, mean, high = min(values), float(np.mean(values)), max(values)
    if len(values) == 1:
        return Spread(f"{mean:{fmt}}", mean)
    return Spread(f"{mean:{fmt}} ({low:{fmt}}–{high:{fmt}})", mean, low, high)


UNITS = {"replace": "record-level privacy (replace one record; Δ = 2τ, minibatches amplify)",
         "add_remove_record": "record-level privacy (add or remove one record, the DP-SGD literature's convention; "
                              "Δ = τ for DP-SGD, 2τ for the others, Poisson sampling amplifies)",
         "add_remove": "worker-level privacy (add or remove a worker; Δ = τ, no amplification)"}


def unit_order(relation: str) -> tuple:
    """Sort key of the privacy units on the page: UNITS' order, then any other relation by name."""
    return (list(UNITS).index(relation), "") if relation in UNITS else (len(UNITS), relation)


def frontier(page, name: str, sweep) -> None:
    by_relation = best_points(sweep)
    if not by_relation:
        page.text("No completed runs yet.")
        return
    config, searched = sweep.runs[0].config, searched_settings(sweep)
    for relation, best in sorted(by_relation.items(), key=lambda item: unit_order(item[0])):
        label = f"{name}-{relation}"
        page.heading(f"{name}: {UNITS.get(relation, relation)}", level=3)
        page.text(f"{config.run.rounds} rounds, {config.run.n_workers} workers, δ = {config.method.params.delta:.3g}, "
                  "ε by the RDP accountant. Per method and ε, the settings with the best mean final f over the seeds "
                  "(mean, and the range over the seeds in brackets; † a setting on an edge of the search for the "
                  "reason given below the table, * one on an edge that nothing explains):")
        rows, reasons = [], []
        for (method, eps), (settings, trs) in sorted(best.items(), key=lambda item: (item[0][1], item[0][0])):
            edges = {(key, side): why_edge(method, key, side, dict(settings)[key], trs)
                     for key, side in open_sides(settings, searched[(relation, method, eps)])}
            reasons += [[plotting.paper_name(method), f"{eps:g}", f"{key} {side}", why or "unexplained: the best may "
                         "lie beyond the search"] for (key, side), why in edges.items()]
            rows.append([plotting.paper_name(method), f"{eps:g}", described(settings, edges), len(trs),
                         *(spread([final(tr, key) for tr in trs], fmt) for key, _, fmt in MEASURES)])
        page.table(label, ["method", "ε", "best settings", "seeds", *(f"final {m}" for _, m, _ in MEASURES)], rows)
        unexplained = sum(1 for *_, why in reasons if why.startswith("unexplained"))
        page.text(f"Best settings on an edge of the search: {len(reasons)} edges, {unexplained} unexplained." +
                  (" Each, and why it may stand:" if reasons else ""))
        if reasons:
            page.table(f"{label}-edges", ["method", "ε", "edge", "why"], reasons)
        verdict(page, label, best)
        chosen = [tr for settings, trs in best.values() for tr in trs]
        words = f"{plotting.dataset_name(config)}, {plotting.PRIVACY_UNITS.get(relation, relation)}"
        for key, _, _ in MEASURES:
            measure = plotting.FINAL_LABEL[key].removeprefix("final ") if key != "grad_norm_sq" else "‖∇f‖²"
            page.figure(f"{label}-{key}", plotting.draw_privacy_utility(
                chosen, y=key, title=f"{words}: final {measure} at the best settings per method and ε "
                "(bars: range over seeds)"))


def verdict(page, name: str, best: dict) -> None:
    """Clip21-SGD2M's mean final f against the best baseline's and DP-Clip21-GD's, per ε (< 0: it wins), and its
    accuracy against the best of the baselines' (at the settings chosen by f)."""
    mean = {key: {m: float(np.mean([final(tr, m) for tr in trs])) for m in ("loss", "accuracy")}
            for key, (settings, trs) in best.items()}
    rows = []
    for eps in sorted({eps for method, eps in best if method == OURS}):
        others = {m: value for (m, e), value in mean.items() if e == eps and m not in (OURS, EF_BASELINE)}
        if not others:
            continue
        leader = min(others, key=lambda m: others[m]["loss"])
        ours = mean[(OURS, eps)]
        rows.append([f"{eps:g}", f"{ours['loss']:.4g}", f"{plotting.paper_name(leader)} {others[leader]['loss']:.4g}",
                     f"{ours['loss'] - others[leader]['loss']:+.3g}",
                     f"{ours['loss'] - mean[(EF_BASELINE, eps)]['loss']:+.3g}" if (EF_BASELINE, eps) in mean else "-",
                     f"{ours['accuracy']:.4f}", f"{max(v['accuracy'] for v in others.values()):.4f}"])
    if rows:
        page.text("Clip21-SGD2M's mean final f against the best baseline's (DP-Clip-SGD, its momentum version, DP-SGD) "
                  "and against DP-Clip21-GD's (a negative difference is a win), and its mean training accuracy against "
                  "the best baseline accuracy at the same settings:")
        page.table(f"{name}-verdict", ["ε", "Clip21-SGD2M f", "best baseline f", "difference", "difference to Clip21-GD",
                                       "Clip21-SGD2M accuracy", "best baseline accuracy"], rows)


def write(page, sweeps: dict) -> None:
    for name, sweep in sweeps.items():
        page.heading(name)
        frontier(page, name, sweep)


FAMILY = Family(
    name="dp", title="Differential privacy: Clip21-SGD2M and the privacy–utility frontier", docs="docs/dp", write=write,
    sweeps=("dp-frontier-mushrooms", "dp-frontier-a9a"),
    # mushrooms, record-level, at three budgets and a 2 × 2 corner of (τ, factor) for every method, 3 seeds: 288 runs
    laptop={"dp-frontier-mushrooms": Cut(grids=tuple(
        {"method.relation": ["replace"], "method.target_epsilon": [1.0, 4.0, 16.0], "method.tau": [0.03, 0.3],
         "stepsize.factor": [0.1, 1.0]} for _ in range(3)))},
)
