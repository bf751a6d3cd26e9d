"""EF21 and EF21 with Bells & Whistles on a deep network (`mpiclip reproduce ef21-dl`).

* ef21-dl-resnet18: EF21-SGD against EF-SGD at Top-k of 1 % (over the whole vector and per tensor) and SGD,
  test accuracy and loss against bits per worker (Richtárik, Sokolov, Fatkhullin, NeurIPS 2021, their
  deep-learning figures; code DL/EF21_100K.py);
* ef21bw-dl-resnet18: EF21-SGD with heavy ball against EF21-SGD, layer-wise Top-k (Fatkhullin et al.,
  "EF21 with Bells & Whistles", code DL/gen_sgd.py).
"""

from __future__ import annotations

from mpiclip import plotting
from mpiclip.reproduce import Family
from mpiclip.reproduce.deep import comparison, costs, laptop, lookup, score


def label(b) -> str:
    name = plotting.paper_name(b.values["method.name"])
    if b.values.get("compressor.name") == "identity":
        return "SGD (no compression)" if name == "EF21-SGD" else name
    share = "Top-1 % per layer" if b.values.get("compressor.per_layer") is True else "Top-1 %"
    return f"{name}, {share}" if "compressor.name" in b.values else name


def write(page, sweeps: dict) -> None:
    page.text("The EF21 paper trains ResNet-18 on CIFAR-10 with 5 workers and compares EF21 with EF and SGD at Top-k "
              "of about 1 % of the parameters; the Bells & Whistles follow-up adds heavy-ball momentum and compresses "
              "tensor by tensor. The laptop preset runs the same comparison with a small CNN on scikit-learn's digits.")
    for name, sweep in sweeps.items():
        page.heading(name)
        if name.startswith("ef21bw"):
            best = comparison(page, name, sweep, "rounds", label)
            hb, plain = lookup(best, method__name="ef21_sgd_hb"), lookup(best, method__name="ef21_sgd")
            if hb and plain:
                shows = "shows" if hb.score >= plain.score else "does not show"
                page.text(f"Heavy ball: EF21-SGD-HB reaches a final test accuracy of {score(hb)} against EF21-SGD's "
                          f"{score(plain)} (mean of {len(hb.traces)} seeds at each one's best step size): the "
                          f"follow-up's claim that momentum helps EF21-SGD {shows} here. At the paper's size it needs "
                          "ResNet-18 on CIFAR-10 for thousands of steps on GPUs.")
            continue
        best = comparison(page, name, sweep, "bits", label)
        sentences, behind = [], False
        for per_layer, share in ((False, "Top-1 %"), (True, "Top-1 % per layer")):
            ef21 = lookup(best, method__name="ef21_sgd", compressor__name="topk_ratio", compressor__per_layer=per_layer)
            ef = lookup(best, method__name="ef14_sgd", compressor__name="topk_ratio", compressor__per_layer=per_layer)
            if ef21 and ef:
                verdict = "ahead of" if ef21.score > ef.score else "level with" if ef21.score == ef.score else "behind"
                behind |= verdict == "behind"
                sentences.append(f"with {share}, EF21-SGD ends at a test accuracy of {score(ef21)} and EF-SGD at "
                                 f"{score(ef)}, both after {ef21.traces[0].bits_per_worker('paper')[-1]:.3g} bits per "
                                 f"worker: EF21 is {verdict} EF at equal bits")
        sgd = lookup(best, method__name="ef21_sgd", compressor__name="identity")
        if sentences:
            page.text("At laptop size " + "; ".join(sentences) + "." + (
                f" Uncompressed SGD reaches {score(sgd)} with {sgd.traces[0].bits_per_worker('paper')[-1]:.3g} bits per "
                "worker." if sgd else "") + (" EF21-SGD moves its estimate g by 1 % of the coordinates of a minibatch "
                "gradient per round, so g lags and keeps the minibatch noise: its guarantees ask for large batches, "
                "which later work replaces by momentum (Fatkhullin, Tyurin, Richtárik 2023); the paper's runs started "
                "from pretrained weights." if behind else "") + " Seeing the paper's gap at full size needs ResNet-18 "
                "on CIFAR-10 for 4,545 steps per run, on GPUs (cost below).")
    costs(page, "ef21-dl", "cifar-10-batches-py in DIR")


STEPS = {"stepsize.value": [0.03, 0.1]}
FAMILY = Family(
    name="ef21-dl", title="EF21 on deep networks", docs="docs/ef21-dl", write=write, runs_per_task=1,
    sweeps=("ef21-dl-resnet18", "ef21bw-dl-resnet18"),
    laptop={
        "ef21-dl-resnet18": laptop(grids=(STEPS, STEPS), rounds=600, eval_every=30, keys={"method.batch": 0.1}),
        "ef21bw-dl-resnet18": laptop(grids=({**STEPS, "run.seed": [0, 1]},), rounds=600, eval_every=30,
                                     keys={"method.batch": 0.1}),
    },
)
