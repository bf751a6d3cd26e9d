"""The Synthetic(α, β) federated data of LEAF / FedProx, made user by user.

Source: litian96/FedProx, ``data/synthetic_1_1/generate_synthetic.py`` (docs/algorithms.md §8), for U users,
d features and K classes (30, 60, 10 there):

* user sizes n_k = int(lognormal(4, 2)) + 50;
* u_k ~ N(0, α²) and B_k ~ N(0, β²) (numpy's ``normal(0, alpha)``: α and β are standard deviations);
* W_k ~ N(u_k, 1) (d × K), b_k ~ N(u_k, 1) (K) — the code's ``mean_b = mean_W``;
* v_k ~ N(B_k, 1) (d), x ~ N(v_k, Σ) with Σ = diag(j^−1.2), j = 1..d;
* y = argmax(xᵀW_k + b_k).

With ``iid``, every user shares one W, b ~ N(0, 1) and v_k = B_k·1 (the code's iid variant). The
distribution is the code's; the numbers are not (the code draws everything from one global stream):
here user k's draws come from ``default_rng([seed, USER, k])`` and the sizes from ``default_rng([seed,
SIZES])``, so any rank can make any user's rows alone. Rows are ordered user by user; the ``natural``
split gives worker k user k's rows. FedProx then keeps 90 % of each user's rows for training.
"""

from __future__ import annotations

import numpy as np

SIZES, USER, SHARED = 31, 32, 33  # purposes in the seed sequence


def sizes(seed: int, users: int) -> np.ndarray:
    return np.random.default_rng([seed, SIZES]).lognormal(4, 2, users).astype(np.int64) + 50


def user(seed: int, k: int, n_rows: int, d: int, classes: int, alpha: float, beta: float,
         iid: bool) -> tuple[np.ndarray, np.ndarray]:
    """(X (n_rows, d), class indices (n_rows,)) of user k."""
    rng = np.random.default_rng([seed, USER, k])
    u, B = rng.normal(0.0, alpha), rng.normal(0.0, beta)
    if iid:
        shared = np.random.default_rng([seed, SHARED])
        W, b = shared.normal(0.0, 1.0, (d, classes)), shared.normal(0.0, 1.0, classes)
        mean_x = np.full(d, B)
    else:
        W, b = rng.normal(u, 1.0, (d, classes)), rng.normal(u, 1.0, classes)
        mean_x = rng.normal(B, 1.0, d)
    scale = np.arange(1, d + 1) ** -0.6  # sqrt of Σ_jj = j^-1.2
    X = mean_x + rng.standard_normal((n_rows, d)) * scale
    return X, np.argmax(X @ W + b, axis=1).astype(np.float64)
