"""Problems, one module each. The table below names what each module registers: a problem's module is imported
when the problem is first looked up, so a run imports only its own (a test checks the table against what the
modules register). The classes named in ``__all__`` import their module when first used."""

from mpiclip.problems.base import PROBLEMS, Problem, Smoothness
from mpiclip.registry import lazy_exports

MODULES = {  # module -> the problems it registers, in their listing order
    "classifier": ("softmax", "mlp"),
    "counterexample": ("clip_counterexample", "clip_noise_counterexample"),
    "least_squares": ("least_squares",),
    "logreg": ("logreg",),
    "networks": ("torch_softmax", "torch_mlp", "cnn_mnist", "lenet5", "resnet18", "resnet20", "vgg11", "char_lstm"),
    "quadratic": ("quadratic",),
}
for _module, _names in MODULES.items():
    PROBLEMS.declare(f"{__name__}.{_module}", _names)

_EXPORTS = {  # name -> its module, imported on first use (PEP 562)
    "Counterexample": "counterexample", "CounterexampleParams": "counterexample", "LeastSquares": "least_squares",
    "LeastSquaresParams": "least_squares", "GRAM_MAX_D": "linear", "LinearDesign": "linear", "LinearModel": "linear",
    "LogisticRegression": "logreg", "LogRegParams": "logreg", "Quadratic": "quadratic",
    "QuadraticParams": "quadratic", "quadratic_worker": "quadratic", "worker_L": "quadratic",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["PROBLEMS", "Problem", "Smoothness", "MODULES", *_EXPORTS]
