"""Clip21 (Khirirat, Gorbunov, Horváth, Islamov, Karray, Richtárik, 2023; docs/algorithms.md §5): Clip-GD against
Clip21-GD and GD on the counterexample, mushrooms and w8a, and the private variants at equal (ε, δ).

* counterexample, mushrooms, w8a: ‖∇f(x^t)‖² against rounds at several τ, the final values for every τ,
  and the clipping activity (worker × round) of one Clip21-GD run;
* noise-counterexample (Clip21-SGD2M's stochastic counterexample): per method and τ the predicted stall point
  beside the measured one, and ‖∇f(x^t)‖² against rounds at one τ with the predicted stalls drawn;
* dp-mushrooms: the privacy-utility trade-off: per method and ε, the mean over seeds at the best (τ, factor)
  (final ‖∇f‖² and training accuracy), and the same at a common (τ, factor).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mpiclip import plotting, results
from mpiclip.problems.counterexample import clip21_sgd_stall, clip_sgd_stall
from mpiclip.reproduce import Cut, Family

SHOWN_TAUS = {"clip21-counterexample": (0.5, 1.2, 2.0), "clip21-mushrooms": (0.01, 0.1, 1.0), "clip21-w8a": (0.01, 0.1, 1.0)}
NOISE_SHOWN_TAU = 1.0  # the τ of the noise counterexample's figure
STALLS = {"clip_sgd": clip_sgd_stall, "clip21_sgd": clip21_sgd_stall}  # method -> its closed-form stall point (a, N, τ)
COMMON = (0.03, 0.3)  # (τ, step-size factor) of the equal-settings table of the DP sweep


def name_of(method: str, tau) -> str:
    return plotting.PAPER_NAMES.get(method, method) + ("" if tau is None else f", τ = {tau:g}")


def convergence(page, name: str, sweep) -> None:
    runs = results.runs(sweep)
    if not runs:
        page.text("No completed runs yet.")
        return
    taus = SHOWN_TAUS.get(name, ())
    rows, chosen = [], []
    for r in runs:
        tr, tau = r.trace, r.param("tau", None)
        rows.append([plotting.PAPER_NAMES.get(r.method, r.method), "-" if tau is None else f"{tau:g}",
                     f"{tr.grad_norm_sq[-1]:.3g}", f"{tr.loss[-1]:.6g}",
                     f"{tr.metrics['accuracy'][-1]:.4f}" if "accuracy" in tr.metrics else "-",
                     f"{np.nanmean(tr.workers['clip_active'][-2]):.2f}" if "clip_active" in tr.workers else "-"])
        if tau is None or tau in taus or not taus:
            tr.attrs["name"] = name_of(r.method, tau)
            chosen.append(tr)
    page.text("Final values after the round budget (clipping active: the share of workers clipped in the last "
              "round):")
    page.table(name, ["method", "τ", "final ‖∇f‖²", "final f", "accuracy", "clipping active"], rows)
    chosen.sort(key=lambda tr: tr.attrs["name"])
    page.figure(name, plotting.draw(chosen, x="rounds", title=f"{name}: ‖∇f‖² against rounds", xmax=None))
    activity = next((r.trace for r in runs if r.method == "clip21_gd" and taus and r.param("tau") == taus[0]), None)
    if activity is not None:
        page.figure(f"{name}-activity", plotting.draw_activity(
            activity, title=f"{name}: Clip21-GD, τ = {taus[0]:g}: clipping active (1) per worker and round"))


def noise_counterexample(page, name: str, sweep) -> None:
    runs = results.runs(sweep)
    if not runs:
        page.text("No completed runs yet.")
        return
    problem = runs[0].config.problem.params
    rows, chosen, lines = [], [], []
    for r in sorted(runs, key=lambda r: (r.method, r.param("tau"))):
        tr, tau = r.trace, r.param("tau")
        late = np.sqrt(tr.grad_norm_sq[len(tr.grad_norm_sq) // 2:])  # ‖∇f(x)‖ = ‖x‖ here: the distance from x* = 0
        stall = STALLS[r.method](problem.spike, problem.rows, tau) if r.method in STALLS else 0.0
        rows.append([plotting.PAPER_NAMES.get(r.method, r.method), f"{tau:g}", "-" if stall is None else f"{stall:.4f}",
                     f"{late.mean():.4f}", f"{late.std():.3f}", f"{tr.grad_norm_sq[-1]:.3g}"])
        if tau == NOISE_SHOWN_TAU:
            tr.attrs["name"] = name_of(r.method, tau)
            chosen.append(tr)
            if r.method in STALLS and stall:
                lines.append((stall**2, f"predicted stall of {plotting.PAPER_NAMES.get(r.method, r.method)}"))
    gamma = runs[0].config.stepsize.factor
    page.text(f"Every worker holds the same {problem.rows} rows f_j(x) = ½‖x − c_j‖², c_0 = −{problem.spike:g}·e_1 and "
              f"the others {problem.spike / (problem.rows - 1):g}·e_1, so x* = 0 and ∇f(x) = x; one row per worker and "
              "round gives skewed, mean-zero noise. Predicted: Clip-SGD settles at ‖x‖ = max(0, a − τ)/(N − 1), "
              "Clip21-SGD at b − m(τ) (its limit as γ → 0; docs/algorithms.md §6), Clip21-SGD2M at 0. Measured: the "
              f"mean and spread of ‖x^t‖ over the second half of the rounds (γ = {gamma:g}/L):")
    page.table(name, ["method", "τ", "predicted ‖x‖", "mean ‖x^t‖", "spread", "final ‖∇f‖²"], rows)
    if chosen:
        chosen.sort(key=lambda tr: tr.attrs["name"])
        page.figure(name, plotting.draw(chosen, x="rounds", xmax=None, hlines=lines,
                                        title=f"{name}: ‖∇f‖² against rounds, τ = {NOISE_SHOWN_TAU:g} (dashed: predicted "
                                        "stall points)"))


def final_mean(traces: list, key: str) -> float:
    """The mean over the seeds of a final value: ‖∇f‖², f or a metric (``accuracy``)."""
    return float(np.mean([(tr.metrics[key] if key in tr.metrics else getattr(tr, key))[-1] for tr in traces]))


def privacy(page, name: str, sweep) -> None:
    runs = results.runs(sweep)
    if not runs:
        page.text("No completed runs yet.")
        return
    groups = defaultdict(list)  # (method, ε, τ, factor) -> traces over seeds
    for r in runs:
        groups[(r.method, r.param("target_epsilon"), r.param("tau"), r.config.stepsize.factor)].append(r.trace)
    # per (method, ε), the (τ, factor) with the smallest mean final ‖∇f‖²
    best = results.select(groups.items(), lambda g: g[0][:2], lambda g: final_mean(g[1], "grad_norm_sq"))
    seeds = sorted({len(trs) for trs in groups.values()})
    delta = runs[0].param("delta")
    rows = [[plotting.PAPER_NAMES.get(method, method), f"{eps:g}", f"{tau:g}", f"{factor:g}", len(trs),
             f"{final_mean(trs, 'grad_norm_sq'):.3g}", f"{final_mean(trs, 'accuracy'):.4f}",
             f"{np.mean([tr.workers['noise_scale'][0, 0] for tr in trs]):.3g}"]
            for (method, eps), ((_, _, tau, factor), trs) in sorted(best.items())]
    page.text(f"At equal (ε, δ = {delta:g}) after {runs[0].config.run.rounds} rounds, the best τ and step-size factor per "
              "method and ε by the mean final ‖∇f‖² over the seeds (σ: the noise the target required):")
    page.table(name, ["method", "ε", "best τ", "factor", "seeds", "final ‖∇f‖²", "accuracy", "σ"], rows)
    same = [[plotting.PAPER_NAMES.get(m, m), f"{e:g}", len(t), f"{final_mean(t, 'grad_norm_sq'):.3g}",
             f"{final_mean(t, 'accuracy'):.4f}"]
            for (m, e, tau, factor), t in sorted(groups.items()) if (tau, factor) == COMMON]
    if same:
        page.text(f"At a common τ = {COMMON[0]:g} and factor {COMMON[1]:g}:")
        page.table(f"{name}-common", ["method", "ε", "seeds", "final ‖∇f‖²", "accuracy"], same)
    chosen = [tr for (_, trs) in best.values() for tr in trs]
    count = "/".join(map(str, seeds))
    for y, label in (("grad_norm_sq", "grad"), ("accuracy", "accuracy")):
        words = f"{plotting.dataset_name(runs[0].config)}, {plotting.PRIVACY_UNITS.get(runs[0].param('relation'), '')}"
        page.figure(f"{name}-{label}", plotting.draw_privacy_utility(
            chosen, y=y, title=f"{words}: best τ and γ per method and ε, mean of {count} seeds (bars: range)"))


def write(page, sweeps: dict) -> None:
    for name, sweep in sweeps.items():
        page.heading(name)
        private = any(key == "method.target_epsilon" for run in sweep.runs[:1] for key, _ in run.values)
        section = noise_counterexample if name == "clip21-noise-counterexample" else privacy if private else convergence
        section(page, name, sweep)


FAMILY = Family(
    name="clip21", title="Clip21 experiments", docs="docs/clip21", write=write,
    sweeps=("clip21-counterexample", "clip21-noise-counterexample", "clip21-mushrooms", "clip21-w8a", "clip21-dp-mushrooms"),
    # the three non-private sweeps whole; the private one with its full-batch methods at three budgets, around
    # the common (τ, factor): a few minutes on 2 cores
    laptop={
        "clip21-counterexample": Cut(),
        "clip21-noise-counterexample": Cut(),
        "clip21-mushrooms": Cut(),
        "clip21-w8a": Cut(),
        "clip21-dp-mushrooms": Cut(grids=({"method.target_epsilon": [2.0, 8.0, 32.0], "method.tau": [0.03, 0.1],
                                           "stepsize.factor": [0.3, 1.0]}, None)),
    },
)
