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

A best setting with no searched setting beyond it, on the line through it, is on an edge of the search; the page
lists each with the reason it may stand, read from the runs (``why_edge``), or calls it unexplained. The page
opens with a reading (who wins where, and a count of the settings inside their search) and gives each unit a
table of the noise a budget costs each mechanism. Methods that sample no records lend their replace runs to the
record-level add/remove unit (the same mechanism, the same run).
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


NO_GAIN = 1e-3  # a best run whose f is within this share of f(x⁰) has not trained
RIDGE = 0.01  # a step up in τ at the same γτ that loses less than this share of the gain over x⁰: a limit reached


def on_ridge(settings: tuple, scores: dict):
    """The searched setting with the next larger τ at the same γτ and the same other settings, and its score, or
    None."""
    here = dict(settings)
    product = here["tau"] * here["factor"]
    same = lambda other: all(v == here[k] for k, v in other if k not in ("tau", "factor"))
    up = [(dict(s)["tau"], s) for s in scores if same(s) and dict(s)["tau"] > here["tau"]
          and abs(dict(s)["tau"] * dict(s)["factor"] / product - 1) < 1e-9]
    if not up:
        return None
    s = min(up)[1]
    return s, scores[s]


def why_edge(method: str, key: str, side: str, settings: tuple, trs: list, scores: dict) -> str:
    """Why the best setting may lie on this edge and still be the optimum, or '' when nothing says so. ``scores``:
    the group's mean final f per searched setting."""
    value = dict(settings)[key]
    start, best = float(np.mean([tr.loss[0] for tr in trs])), scores[settings]
    gain = start - best
    if gain < NO_GAIN * abs(start):
        return (f"the best improves on x⁰ (f = {start:.4g}) by {gain:.2g} only: the optimum is (next to) no training, "
                "which no grid holds")
    if side == "above" and DOMAIN_END.get(key) == value:
        return f"{key} = {value:g} is the end of its range"
    clipped = float(np.mean([np.nanmean(tr.workers["clip_active"]) for tr in trs]))  # the final x sent nothing
    if key == "tau" and side == "above" and clipped == 0:
        return "nothing clipped: a larger τ sends the same messages with more noise (σ ∝ τ at a budget)"
    if key == "tau" and side == "below" and method in SCALE_FREE_WHEN_CLIPPED:
        if clipped >= ALL_CLIPPED:
            return (f"every message clipped ({clipped:.4f}): only γτ matters, and τ → 0 at that γτ is sign-like "
                    "descent, the same run")
    if key == "tau" and side == "below" and (up := on_ridge(settings, scores)) is not None:
        loss = up[1] - best
        if loss < RIDGE * gain:
            return (f"along γτ = {value * dict(settings)['factor']:.2g}, τ = {dict(up[0])['tau']:g} gives f only "
                    f"{loss:.2g} above ({loss / gain:.1%} of the gain over x⁰): τ → 0 at this γτ is a limit the runs "
                    "have reached")
    return ""


def described(settings: tuple, edges: dict) -> str:
    """'tau 0.01†, factor 0.3*': * marks a value on an edge of the search that nothing explains (the best may lie
    beyond it), † one on an edge for a reason (listed under the table)."""
    def mark(key):
        reasons = [why for (k, _), why in edges.items() if k == key]
        return "" if not reasons else "*" if not all(reasons) else "†"
    return ", ".join(f"{k} {v:g}{mark(k)}" for k, v in settings)


def edges_of(best: dict, searched: dict, relation: str) -> dict:
    """(method, ε) -> {(setting, side): why it may stand, '' when nothing says so} for the open sides of each best."""
    return {(method, eps): {(key, side): why_edge(method, key, side, settings, trs, scores)
                            for key, side in open_sides(settings, searched[(relation, method, eps)])}
            for (method, eps), (settings, trs, scores) in best.items()}


def searched_settings(sweep) -> dict:
    """(relation, method, ε) -> the settings the sweep's grids search (a run that failed was searched too)."""
    out = defaultdict(set)
    for point in sweep.runs:
        p = point.config.method.params
        out[(p.relation, point.config.method.name, p.target_epsilon)].add(settings_of(point.config))
    ran = {method for relation, method, _ in out if relation == RECORD_ADD_REMOVE}
    sampling = {point.config.method.name for point in sweep.runs if not samples_no_records(point.config)}
    for (relation, method, eps), settings in list(out.items()):
        if ran and relation == "replace" and method not in ran | sampling:
            out[(RECORD_ADD_REMOVE, method, eps)] = settings
    return out


RECORD_ADD_REMOVE = "add_remove_record"


def samples_no_records(config) -> bool:
    """A run whose rounds see every record and clip a mean or a difference (not DP-SGD's per-example sum): its
    mechanism is the Gaussian of sensitivity 2τ under both record-level relations, whose privacy curve is the same
    for both, so its σ, and the whole run, are the same (tests/test_frontier_edges.py)."""
    return config.method.name != "dp_sgd" and getattr(config.method.params, "batch", 1.0) >= 1.0


def unit_of(tr) -> str:
    """The privacy relation a trace ran under."""
    return tr.config["method"].get("relation", "replace")


def borrowed(runs: list) -> list:
    """The replace runs that stand for record-level add/remove: those of methods that sample no records, where the
    sweep has add_remove_record runs of other methods but none of theirs (a sweep need not run them twice)."""
    ran = {r.method for r in runs if r.param("relation") == RECORD_ADD_REMOVE}
    if not ran:
        return []
    return [r for r in runs if r.param("relation") == "replace" and r.method not in ran and samples_no_records(r.config)]


def best_points(sweep) -> dict:
    """relation -> {(method, ε): (settings, traces over the seeds, {settings: mean final f} of the group)} at the
    best mean final f."""
    groups = defaultdict(list)  # (relation, method, ε, settings) -> traces over the seeds
    runs = results.runs(sweep)
    for r in runs:
        groups[(r.param("relation"), r.method, r.param("target_epsilon"), settings_of(r.config))].append(r.trace)
    for r in borrowed(runs):
        groups[(RECORD_ADD_REMOVE, r.method, r.param("target_epsilon"), settings_of(r.config))].append(r.trace)
    score = lambda g: np.mean([final(tr, "loss") for tr in g[1]])
    scores = defaultdict(dict)
    for key, trs in groups.items():
        scores[key[:3]][key[3]] = float(score((key, trs)))
    chosen = results.select(groups.items(), lambda g: g[0][:3], score)
    best = defaultdict(dict)
    for (relation, method, eps), ((_, _, _, settings), trs) in chosen.items():
        best[relation][(method, eps)] = (settings, trs, scores[(relation, method, eps)])
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


def frontier(page, name: str, sweep, by_relation: dict, searched: dict) -> None:
    if not by_relation:
        page.text("No completed runs yet.")
        return
    config = sweep.runs[0].config
    for relation, best in sorted(by_relation.items(), key=lambda item: unit_order(item[0])):
        label = f"{name}-{relation}"
        page.heading(f"{name}: {UNITS.get(relation, relation)}", level=3)
        if lent := sorted({m for (m, _), (_, trs, _) in best.items() if unit_of(trs[0]) != relation}):
            page.text(f"{', '.join(plotting.paper_name(m) for m in lent)} sample no records: under both record-level "
                      "relations a round is the Gaussian mechanism of sensitivity 2τ, with one σ for a budget, so their "
                      "rows are the replace runs.")
        page.text(f"{config.run.rounds} rounds, {config.run.n_workers} workers, δ = {config.method.params.delta:.3g}, "
                  "ε by the RDP accountant. Per method and ε, the settings with the best mean final f over the seeds "
                  "(mean, and the range over the seeds in brackets; † a setting on an edge of the search for the "
                  "reason given below the table, * one on an edge that nothing explains):")
        rows, reasons, judged = [], [], edges_of(best, searched, relation)
        for (method, eps), (settings, trs, _) in sorted(best.items(), key=lambda item: (item[0][1], item[0][0])):
            edges = judged[(method, eps)]
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
        noise_table(page, label, best)
        verdict(page, label, best)
        chosen = [tr for _, trs, _ in best.values() for tr in trs]
        own = [tr for tr in chosen if unit_of(tr) == relation]
        words = f"{plotting.dataset_name(config)}, {plotting.PRIVACY_UNITS.get(relation, relation)}"
        for key, _, _ in MEASURES:
            measure = plotting.FINAL_LABEL[key].removeprefix("final ") if key != "grad_norm_sq" else "‖∇f‖²"
            page.figure(f"{label}-{key}", plotting.draw_privacy_utility(
                own, y=key, title=f"{words}: final {measure} at the best settings per method and ε "
                "(bars: range over seeds)", lent=[tr for tr in chosen if unit_of(tr) != relation]))


def verdict(page, name: str, best: dict) -> None:
    """Clip21-SGD2M's mean final f against the best baseline's and DP-Clip21-GD's, per ε (< 0: it wins), and its
    accuracy against the best of the baselines' (at the settings chosen by f)."""
    mean = {key: {m: float(np.mean([final(tr, m) for tr in trs])) for m in ("loss", "accuracy")}
            for key, (_, trs, _) in best.items()}
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


def noise_to_signal(tr) -> float:
    """The noise in a message per coordinate over τ, the largest norm its clipped part can have (a clipped vector, or
    DP-SGD's mean of clipped examples), for the most exposed worker (the least noise)."""
    return float(np.nanmin(tr.workers["noise_scale"][0])) / float(tr.config["method"]["tau"])


def noise_table(page, name: str, best: dict) -> None:
    """σ/τ of each method's chosen runs per ε: what a budget costs each mechanism, whatever the step size."""
    methods = sorted({m for m, _ in best}, key=plotting.paper_name)
    budgets = sorted({eps for _, eps in best})
    rows = [[plotting.paper_name(m)] + [f"{np.mean([noise_to_signal(tr) for tr in best[(m, e)][1]]):.3g}"
                                        if (m, e) in best else "-" for e in budgets] for m in methods]
    page.text("The noise a budget costs each mechanism: per coordinate of a message, over τ (the norm of the largest "
              "clipped part), at the chosen runs:")
    page.table(f"{name}-noise", ["method", *(f"σ/τ at ε = {e:g}" for e in budgets)], rows)


def leaders(best: dict) -> str:
    """'DP-SGD at ε = 1–16 (f 0.466 … 0.389)': the method with the least mean final f at each ε, runs of ε merged."""
    mean = {key: float(np.mean([final(tr, "loss") for tr in trs])) for key, (_, trs, _) in best.items()}
    budgets = sorted({eps for _, eps in best})
    won = [(eps, min((m for m, e in mean if e == eps), key=lambda m: mean[(m, eps)])) for eps in budgets]
    parts, start = [], 0
    for i in range(1, len(won) + 1):
        if i == len(won) or won[i][1] != won[start][1]:
            first, last = won[start][0], won[i - 1][0]
            where = f"ε = {first:g}" if first == last else f"ε = {first:g}–{last:g}"
            values = f"{mean[(won[start][1], first)]:.3g}" + ("" if first == last else
                                                                 f" … {mean[(won[i - 1][1], last)]:.3g}")
            parts.append(f"{plotting.paper_name(won[start][1])} at {where} (f {values})")
            start = i
    return "; ".join(parts)


def reading(page, chosen: dict, searched: dict) -> None:
    """Which method wins where, in words and numbers, and why (the mechanisms' noise, from the noise tables); and
    how many of the best settings lie inside their search."""
    lines, counts = [], [0, 0, 0]  # inside, on an edge for a reason, on an edge unexplained
    for name, by_relation in chosen.items():
        for relation, best in sorted(by_relation.items(), key=lambda item: unit_order(item[0])):
            for edges in edges_of(best, searched[name], relation).values():
                counts[0 if not edges else 1 if all(edges.values()) else 2] += 1
            start = float(np.mean([tr.loss[0] for _, trs, _ in best.values() for tr in trs]))
            ours = sorted((eps, float(np.mean([final(tr, "loss") for tr in trs])))
                          for (m, eps), (_, trs, _) in best.items() if m == OURS)
            line = f"- **{name}, {plotting.PRIVACY_UNITS.get(relation, relation)}**: {leaders(best)}"
            if ours:
                line += (f"; Clip21-SGD2M f {ours[0][1]:.3g} at ε = {ours[0][0]:g} … {ours[-1][1]:.3g} at "
                         f"ε = {ours[-1][0]:g}")
            lines.append(line + f"; f(x⁰) = {start:.4g}.")
    if not lines:
        return
    page.heading("Reading", level=2)
    page.text("The least mean final f per ε, by privacy unit (details and every method's best settings below):")
    page.text("\n".join(lines))
    page.text(f"Of the {sum(counts)} best settings (data set, unit, method, ε), {counts[0]} lie strictly inside their "
              f"search, {counts[1]} on an edge for a reason read from the runs, and {counts[2]} on an edge nothing "
              "explains (each is listed under its table).")
    page.text("Why: a budget (ε, δ) fixes each mechanism's noise multiplier, and the noise tables below show what it "
              "costs a message. Sampling amplifies privacy: a record sits in a round's 10 % minibatch with probability "
              "0.1, so DP-SGD, DP-Clip-SGD and its momentum version need far less noise than the methods that touch "
              "every record every round. Clip21-GD and Clip21-SGD2M do (the client momentum of Clip21-SGD2M carries a "
              "minibatch into later rounds, so even on minibatches it would not be amplified), and their error-feedback "
              "buffers add up the noise of every round, so at these budgets their best is a short move from x⁰. "
              "Per-example clipping bounds a record's share of DP-SGD's sum by τ instead of the whole message, so under "
              "add/remove of a record its sensitivity is τ where the others' is 2τ, and its noise is divided by the lot "
              "size; at worker level the same sum moves by the lot size times τ, and DP-SGD loses its advantage. Server "
              "momentum only averages messages already noised, and buys little here.")


def write(page, sweeps: dict) -> None:
    chosen = {name: best_points(sweep) for name, sweep in sweeps.items()}
    searched = {name: searched_settings(sweep) for name, sweep in sweeps.items()}
    reading(page, chosen, searched)
    for name, sweep in sweeps.items():
        page.heading(name)
        frontier(page, name, sweep, chosen[name], searched[name])


_LAPTOP = {"method.target_epsilon": [1.0, 16.0]}
FAMILY = Family(
    name="dp", title="Differential privacy: Clip21-SGD2M and the privacy–utility frontier", docs="docs/dp", write=write,
    sweeps=("dp-frontier-mushrooms", "dp-frontier-a9a"),
    # mushrooms at two budgets, 3 seeds, two step sizes near each method's best, the three privacy units for
    # DP-Clip-SGD and record-level for the others: 96 runs. The shipped grids, in order: Clip-SGD (τ = 0.1, 1, 10),
    # Clip-SGDM, the four again with Poisson lots, DP-SGD (replace, Poisson add/remove, worker), Clip21-GD (three τ),
    # Clip21-SGD2M (two τ).
    laptop={"dp-frontier-mushrooms": Cut(grids=(
        {**_LAPTOP, "stepsize.factor": [0.01, 0.1]}, None, None,
        {**_LAPTOP, "method": [{"name": "clip_sgdm", "batch": 0.1, "beta": 0.5}], "method.relation": ["replace"],
         "stepsize.factor": [0.01, 0.1]},
        {**_LAPTOP, "stepsize.factor": [0.01, 0.1]}, None, None, None,
        {**_LAPTOP, "method.tau": [1.0], "stepsize.factor": [0.1, 1.0]},
        {**_LAPTOP, "method.tau": [1.0], "stepsize.factor": [0.1, 1.0]}, None,
        None, {**_LAPTOP, "method.relation": ["replace"], "stepsize.factor": [0.01, 0.1]}, None,
        None, {**_LAPTOP, "method": [{"name": "clip21_sgd2m", "batch": 1.0, "beta1": 0.1, "beta2": 0.1}],
               "method.relation": ["replace"], "stepsize.factor": [0.001, 0.01]}))},
)
