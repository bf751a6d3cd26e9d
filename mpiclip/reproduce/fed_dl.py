"""GradAlign on deep networks (`mpiclip reproduce fed-dl`): FedGA against FedAvg, SCAFFOLD and large-batch SGD
with one-class clients on EMNIST (cnn_mnist) and CIFAR-10 (LeNet-5, ResNet-18), and on Shakespeare's speaking
roles (the character LSTM) (Dandi, Barba, Jaggi, AAAI 2022; code epfml/GradientAlignment)."""

from __future__ import annotations

import numpy as np

from mpiclip import plotting
from mpiclip.reproduce import Family
from mpiclip.reproduce.deep import comparison, costs, laptop, lookup, score


def label(b) -> str:
    name = plotting.paper_name(b.values["method.name"])
    model = b.values.get("problem.name")
    return f"{name}, {model}" if model else name


def at_communication(fed, avg) -> str:
    """FedGA and FedAvg test accuracy at the largest number of communication rounds both have recorded."""
    a, b = fed.traces[0], avg.traces[0]
    common = min(a.metrics["comm_rounds"][-1], b.metrics["comm_rounds"][-1])
    at = lambda tr: tr.metrics["test_accuracy"][np.searchsorted(tr.metrics["comm_rounds"], common, side="right") - 1]
    return f"at {common:g} communication rounds FedGA has {at(a):.3f} and FedAvg {at(b):.3f}"


def learned(b) -> bool:
    """Did the run's test accuracy rise by more than 5 points from its start (its seed's first row)?"""
    accuracy = b.traces[0].metrics["test_accuracy"]
    return accuracy[-1] > accuracy[0] + 0.05


def write(page, sweeps: dict) -> None:
    page.text("The GradAlign paper trains cnn_mnist on EMNIST with 47 clients holding one class each, 10 per round, "
              "and compares FedGA with FedAvg, SCAFFOLD and large-batch SGD; also one-class CIFAR-10 clients and "
              "Shakespeare. The laptop preset runs the EMNIST comparison on scikit-learn's digits with 10 one-class "
              "clients, 5 per round, and a small CNN; LeNet-5 learns nothing from 8×8 images in a laptop's rounds, and "
              "ResNet-18 and Shakespeare's character LSTM need the papers' data and GPUs (`--full`).")
    for name, sweep in sweeps.items():
        page.heading(name)
        best = comparison(page, name, sweep, "comm_rounds", label)
        models = sorted({b.values.get("problem.name") for b in best if "problem.name" in b.values}) or [None]
        for model in models:
            where = {} if model is None else {"problem__name": model}
            fed, avg = lookup(best, method__name="fedga", **where), lookup(best, method__name="fedavg", **where)
            if fed and avg and not all(learned(b) for b in (fed, avg)):
                page.text(f"{'' if model is None else model + ': '}FedGA ({score(fed)}) or FedAvg ({score(avg)}) ends "
                          "no better than it started: no verdict at this size.")
            elif fed and avg:
                page.text(f"{'' if model is None else model + ': '}after {int(fed.traces[0].rounds[-1])} rounds FedGA's "
                          f"final test accuracy is {score(fed)} and FedAvg's {score(avg)} (FedGA spends a second "
                          f"communication round on ĝ; {at_communication(fed, avg)}). The paper's claim that FedGA beats "
                          f"FedAvg under one-class clients {'shows' if fed.score > avg.score else 'does not show'} at equal "
                          f"server rounds here. At full size: {FULL_SIZE.get(name, 'the sweep file says')}.")
    costs(page, "fed-dl", "DIR/emnist with emnist-balanced-*-ubyte.gz, cifar-10-batches-py, and shakespeare/{train,test}")


FULL_SIZE = {"fed-dl-emnist": "EMNIST's 47 clients for 2,001 rounds with full local batches of 2,400 images, on GPUs",
             "fed-dl-cifar10": "CIFAR-10's 10 one-class clients for 2,001 rounds, LeNet-5 and ResNet-18, on GPUs",
             "fed-dl-shakespeare": "LEAF's Shakespeare roles for 801 rounds with the character LSTM"}
ONE_CLASS = {"source": "digits", "split": "one_class", "test_fraction": 0.2}
FEW_CLIENTS = {"run.n_workers": 10, "federated.clients_per_round": 5, "federated.batch_size": 20}
FAMILY = Family(
    name="fed-dl", title="GradAlign on deep networks", docs="docs/fed-dl", write=write, runs_per_task=1,
    sweeps=("fed-dl-emnist", "fed-dl-cifar10", "fed-dl-shakespeare"),
    # the EMNIST comparison on digits with one class per client (LeNet-5 learns nothing from 8×8 images in a few
    # rounds, ResNet-18 is beyond a laptop, and no package ships Shakespeare's files: those need --full)
    laptop={"fed-dl-emnist": laptop(data=ONE_CLASS, rounds=60, eval_every=5, keys=FEW_CLIENTS)},
)
