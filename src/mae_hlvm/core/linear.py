"""The ridge regression both the generator's diagnostics and the learning gate's linear reference fit."""

from __future__ import annotations

import numpy as np

_RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # times the mean eigenvalue of the Gram matrix


def ridge_fit_predict(x_tr: np.ndarray, targets: list[np.ndarray], x_te: np.ndarray) -> list[np.ndarray]:
    """Ridge with intercept per target group; alpha picked on the last quarter of train.

    x_tr (N, F), targets [(N, T_k)], x_te (M, F) -> [(M, T_k)]. Each group gets its own
    alpha from ``_RIDGE_ALPHAS``, then is refitted on all of train. One eigendecomposition
    of the (F, F) Gram matrix serves every alpha and group, which keeps pixels cheap.
    """
    n_fit = (3 * len(x_tr)) // 4
    fit_mean = x_tr[:n_fit].mean(axis=0)
    fit_centred = x_tr[:n_fit] - fit_mean
    evals, evecs = np.linalg.eigh(fit_centred.T @ fit_centred)
    unit = max(float(evals.mean()), 1e-12)
    val_proj = (x_tr[n_fit:] - fit_mean) @ evecs  # (V, F)

    def pick_alpha(y: np.ndarray) -> float:
        y_mean = y[:n_fit].mean(axis=0)
        proj_xty = evecs.T @ (fit_centred.T @ (y[:n_fit] - y_mean))  # (F, T)

        def val_error(alpha: float) -> float:
            pred = val_proj @ (proj_xty / (evals + alpha * unit)[:, None]) + y_mean
            return float(((pred - y[n_fit:]) ** 2).sum())

        return min(_RIDGE_ALPHAS, key=val_error)

    x_mean = x_tr.mean(axis=0)
    centred = x_tr - x_mean
    gram = centred.T @ centred
    preds = []
    for y in targets:
        # Same penalty per sample as in selection: the full train set is larger than the fit split.
        penalty = pick_alpha(y) * unit * len(x_tr) / n_fit
        y_mean = y.mean(axis=0)
        coef = np.linalg.solve(gram + penalty * np.eye(len(gram)), centred.T @ (y - y_mean))
        preds.append((x_te - x_mean) @ coef + y_mean)
    return preds
