"""Cross-validated ridge regression (the Takagi & Nishimoto family of linear decoders)."""
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


def ridge_baseline(x_train: np.ndarray, z_train, c_train, x_test: np.ndarray,
                   alphas, folds: int):
    """Takagi & Nishimoto: voxels -> VAE latent z and voxels -> text condition c by ridge
    (one alpha per target block, chosen by efficient leave-one-out cross-validation; `folds`
    > 0 uses k-fold instead), predicted for the test voxels. z, c: torch tensors (n, ...)."""
    import torch

    def fit_predict(y):
        model = RidgeCV(alphas=alphas, cv=folds or None).fit(x_train, y.flatten(1).numpy())
        return torch.from_numpy(model.predict(x_test)).float().reshape(len(x_test), *y.shape[1:])

    return fit_predict(z_train), fit_predict(c_train)
