"""Theoretical step sizes (docs/algorithms.md §3, §4, §9); a run uses γ = factor × rule.

* ``ef21``: γ = 1/(L + L̃·sqrt(β/θ)) with θ = 1 − sqrt(1 − α), β = (1 − α)/θ (EF21 Thm 2); 1/L when α = 1.
  The official code uses it for EF21, EF (EF14), naive compressed GD and every EF21 extension (the PP
  variant's θ_p = pθ, β_p = pβ leave sqrt(β/θ) unchanged).
* ``ef21_pl``: γ = min(1/(L + L̃·sqrt(2β/θ)), θ/(2μ)) (EF21 Thm 3, the PL case), which the official EF21+
  script uses with μ = λ and the least-squares scripts with μ of the data.
* ``diana``: γ = 1/(L(1 + 2ω/n)), the DIANA bound of Horváth et al. 2019 for an unbiased compressor of
  variance ω (strongly convex case; not checked against the paper's text here).
* ``inverse_L``: γ = 1/L (GD and the clipping baselines).
* ``constant``: γ = stepsize.value.

1 − sqrt(1 − α) is computed as α/(1 + sqrt(1 − α)) to avoid cancellation for small α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from mpiclip.errors import InputError
from mpiclip.params import param, positive


@dataclass(frozen=True)
class Constants:
    """What the rules need: smoothness, PL/strong-convexity, compressor constants, number of workers."""

    L: float
    L_tilde: float
    mu: Optional[float] = None
    alpha: Optional[float] = None
    omega: Optional[float] = None
    n_workers: int = 1


def theta_and_sqrt_beta_over_theta(alpha: float) -> tuple[float, float]:
    """θ = 1 − sqrt(1 − α) and sqrt(β/θ) = sqrt(1 − α)/θ."""
    s = math.sqrt(1.0 - alpha)
    theta = alpha / (1.0 + s)
    return theta, s / theta


def ef21_gamma(L: float, L_tilde: float, alpha: float) -> float:
    if alpha >= 1.0:
        return 1.0 / L
    _, root = theta_and_sqrt_beta_over_theta(alpha)
    return 1.0 / (L + L_tilde * root)


def ef21_pl_gamma(L: float, L_tilde: float, alpha: float, mu: float) -> float:
    if alpha >= 1.0:
        return min(1.0 / L, 1.0 / (2.0 * mu))
    theta, root = theta_and_sqrt_beta_over_theta(alpha)
    return min(1.0 / (L + L_tilde * math.sqrt(2.0) * root), theta / (2.0 * mu))


def diana_gamma(L: float, omega: float, n_workers: int) -> float:
    return 1.0 / (L * (1.0 + 2.0 * omega / n_workers))


def _need(value, rule: str, what: str):
    if value is None:
        raise InputError("stepsize.rule", rule, what)
    return value


RULES: dict[str, Callable[[Constants, "StepsizeParams"], float]] = {
    "ef21": lambda c, p: ef21_gamma(c.L, c.L_tilde, _need(c.alpha, "ef21", "needs a contractive compressor (an α)")),
    "ef21_pl": lambda c, p: ef21_pl_gamma(c.L, c.L_tilde, _need(c.alpha, "ef21_pl", "needs a contractive compressor (an α)"),
                                          _need(c.mu, "ef21_pl", "needs μ, which this problem does not define")),
    "diana": lambda c, p: diana_gamma(c.L, _need(c.omega, "diana", "needs an unbiased compressor (an ω)"), c.n_workers),
    "inverse_L": lambda c, p: 1.0 / c.L,
    "constant": lambda c, p: p.value,
}


@dataclass(frozen=True)
class StepsizeParams:
    rule: str = param("auto", "step-size rule; 'auto' takes the method's own (see `mpiclip stepsize`)",
                      choices=("auto", *RULES))
    factor: float = param(1.0, "multiplier of the rule's γ (the papers tune it over powers of two)", check=positive)
    value: Optional[float] = param(None, "γ for rule = 'constant'", check=positive)

    def check(self) -> None:
        if self.rule == "constant" and self.value is None:
            raise InputError("stepsize.value", "missing", "rule = 'constant' needs a value")
        if self.rule != "constant" and self.value is not None:
            raise InputError("stepsize.value", self.value, f"is only used with rule = 'constant' (rule is {self.rule!r})")


def rule_for(params: StepsizeParams, default_rule: str) -> str:
    return default_rule if params.rule == "auto" else params.rule


def check(params: StepsizeParams, default_rule: str, alpha: Optional[float], omega: Optional[float],
          compressor_name: str) -> None:
    """Fail early (before any data is read) when the compressor lacks the constant the rule needs."""
    rule = rule_for(params, default_rule)
    if rule in ("ef21", "ef21_pl") and alpha is None:
        raise InputError("stepsize.rule", rule, f"needs a contractive compressor, and {compressor_name!r} has no α; "
                         "use rule = 'constant' or 'inverse_L'")
    if rule == "diana" and omega is None:
        raise InputError("stepsize.rule", rule, f"needs an unbiased compressor, and {compressor_name!r} has no ω")


def resolve(params: StepsizeParams, default_rule: str, constants: Constants) -> tuple[str, float]:
    """(rule actually used, γ = factor × rule)."""
    rule = rule_for(params, default_rule)
    return rule, params.factor * RULES[rule](constants, params)
