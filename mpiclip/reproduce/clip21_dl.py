"""Clip21 on a deep network (`mpiclip reproduce clip21-dl`): Clip-SGD against Clip21-SGD over the clipping
threshold τ on VGG-11 / CIFAR-10 (Khirirat et al. 2023, appendix), SGD beside them."""

from __future__ import annotations

from mpiclip import plotting
from mpiclip.reproduce import Family
from mpiclip.reproduce.deep import comparison, costs, laptop, lookup, plotting_value, score


def label(b) -> str:
    name = plotting.paper_name(b.values["method.name"])
    tau = b.values.get("method.tau")
    return "SGD (no clipping)" if name == "EF21-SGD" else f"{name}, τ = {plotting_value(tau)}"


def write(page, sweeps: dict) -> None:
    page.text("The Clip21 paper's appendix trains VGG-11 on CIFAR-10 with Clip-SGD and Clip21-SGD over the clipping "
              "threshold τ. The laptop preset compares the two on scikit-learn's digits with a small CNN.")
    for name, sweep in sweeps.items():
        page.heading(name)
        best = comparison(page, name, sweep, "rounds", label)
        taus = sorted({b.values["method.tau"] for b in best if b.values["method.name"] == "clip21_sgd"})
        pairs = [(tau, lookup(best, method__name="clip21_sgd", method__tau=tau),
                  lookup(best, method__name="clip_sgd", method__tau=tau)) for tau in taus]
        pairs = [(tau, new, old) for tau, new, old in pairs if new and old]
        if pairs:
            wins = sum(new.score > old.score for _, new, old in pairs)
            detail = "; ".join(f"τ = {plotting_value(tau)}: {score(new)} against {score(old)}" for tau, new, old in pairs)
            sgd = lookup(best, method__name="ef21_sgd")
            page.text(f"Final test accuracy of Clip21-SGD against Clip-SGD ({detail}): Clip21 is ahead at {wins} of "
                      f"{len(pairs)} thresholds" + (f"; unclipped SGD reaches {score(sgd)}" if sgd else "") + ". The paper's "
                      "claim (error feedback removes the bias of clipping, most visibly at small τ) "
                      f"{'shows' if wins * 2 > len(pairs) else 'does not show clearly'} at laptop size; at full size it "
                      "needs VGG-11 on CIFAR-10 over the four thresholds, on GPUs.")
    costs(page, "clip21-dl", "cifar-10-batches-py in DIR")


STEPS = {"stepsize.value": [0.03, 0.1]}
FAMILY = Family(
    name="clip21-dl", title="Clip21 on deep networks", docs="docs/clip21-dl", write=write, runs_per_task=1,
    sweeps=("clip21-dl-vgg11",),
    laptop={"clip21-dl-vgg11": laptop(grids=({"method.tau": [0.1, 1.0], **STEPS}, STEPS), keys={"method.batch": 0.1})},
)
