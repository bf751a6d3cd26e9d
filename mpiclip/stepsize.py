"""Theoretical step sizes (ALGORITHMS §2.4, §8.5); a run uses γ = factor × rule.

* ``ef21``: γ = 1/(L + L̃·sqrt(β/θ)) with θ = 1 − sqrt(1 − α), β = (1 − α)/θ (EF21 Thm 2); 1/L when α = 1.
  The official code uses it for EF21, EF (EF14) and naive compressed GD.
* ``ef21_plus``: γ = min(1/(L + L̃·sqrt(2β/θ)), θ/(2μ)) (the PL rule of EF21 Thm 3), which the official
  EF21+ script uses with μ = λ.
* ``inverse_L``: γ = 1/L (GD and the clipping baselines).
* ``constant``: γ = stepsize.value.

1 − sqrt(1 − α) is computed as α/(1 + sqrt(1 − α)) to avoid cancellation for small α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mpiclip.errors import InputError
from mpiclip.params import param, positive

RULES = ("auto", "ef21", "ef21_plus", "inverse_L", "constant")


@dataclass(frozen=True)
class StepsizeParams:
    rule: str = param("auto", "step-size rule; 'auto' takes the method's own (see the module doc)", choices=RULES)
    factor: float = param(1.0, "multiplier of the rule's γ (the papers tune it over powers of two)", check=positive)
    value: Optional[float] = param(None, "γ for rule = 'constant'", check=positive)

    def __post_init__(self):
        if self.rule == "constant" and self.value is None:
            raise InputError("stepsize.value", "missing", "rule = 'constant' needs a value")
        if self.rule != "constant" and self.value is not None:
            raise InputError("stepsize.value", self.value, f"is only used with rule = 'constant' (rule is {self.rule!r})")


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


def ef21_plus_gamma(L: float, L_tilde: float, alpha: float, mu: float) -> float:
    if alpha >= 1.0:
        return min(1.0 / L, 1.0 / (2.0 * mu))
    theta, root = theta_and_sqrt_beta_over_theta(alpha)
    return min(1.0 / (L + L_tilde * math.sqrt(2.0) * root), theta / (2.0 * mu))


def rule_for(params: StepsizeParams, default_rule: str, alpha: Optional[float], compressor_name: str) -> str:
    """The rule a run uses; raises if it needs a contraction constant the compressor lacks."""
    rule = default_rule if params.rule == "auto" else params.rule
    if rule in ("ef21", "ef21_plus") and alpha is None:
        raise InputError("stepsize.rule", rule, f"needs a contractive compressor, and {compressor_name!r} has no α; "
                         "use rule = 'constant' or 'inverse_L'")
    return rule


def resolve(params: StepsizeParams, default_rule: str, L: float, L_tilde: float, alpha: Optional[float],
            mu: Optional[float], compressor_name: str) -> tuple[str, float]:
    """(rule actually used, γ)."""
    rule = rule_for(params, default_rule, alpha, compressor_name)
    if rule == "ef21":
        base = ef21_gamma(L, L_tilde, alpha)
    elif rule == "ef21_plus":
        if mu is None:
            raise InputError("stepsize.rule", rule, "needs μ, which this problem does not define")
        base = ef21_plus_gamma(L, L_tilde, alpha, mu)
    elif rule == "inverse_L":
        base = 1.0 / L
    else:
        base = params.value
    return rule, params.factor * base
