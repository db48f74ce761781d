"""Cross-validated ridge regression: the data-prep sanity decoder (the Takagi & Nishimoto
baseline itself is `methods/takagi.py`)."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold


def cv_ridge_predict(X: np.ndarray, Y: np.ndarray, alphas, folds: int = 5, seed: int = 0):
    """Out-of-fold ridge predictions of Y (n, k) from X (n, p).

    The penalty is picked inside each training fold by efficient leave-one-out (RidgeCV),
    so no test trial ever informs its own prediction. Returns (predictions, alphas chosen).
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    pred = np.zeros_like(Y)
    chosen = []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
        model = RidgeCV(alphas=np.asarray(alphas, float)).fit(X[train], Y[train])
        pred[test] = model.predict(X[test])
        chosen.append(float(model.alpha_))
    return pred, chosen


def r2_per_column(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination of each column."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return 1 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)

