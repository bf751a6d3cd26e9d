"""Problems, one module each; importing this package registers them all."""

from mpiclip.problems import classifier, counterexample, least_squares, logreg, networks, quadratic  # noqa: F401  (registers)
from mpiclip.problems.base import PROBLEMS, Problem, Smoothness
from mpiclip.problems.counterexample import Counterexample, CounterexampleParams
from mpiclip.problems.least_squares import LeastSquares, LeastSquaresParams
from mpiclip.problems.linear import GRAM_MAX_D, LinearDesign, LinearModel
from mpiclip.problems.logreg import LogisticRegression, LogRegParams
from mpiclip.problems.quadratic import Quadratic, QuadraticParams, quadratic_worker, worker_L

__all__ = ["PROBLEMS", "Problem", "Smoothness", "Counterexample", "CounterexampleParams", "LeastSquares",
           "LeastSquaresParams", "GRAM_MAX_D", "LinearDesign", "LinearModel", "LogisticRegression", "LogRegParams",
           "Quadratic", "QuadraticParams", "quadratic_worker", "worker_L"]
