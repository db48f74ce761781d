"""Sanity checks of prepared data: a cross-validated ridge decoder and noise ceilings.

If data prep scrambled trials and images (a wrong masterordering offset, a shuffled
session), these scores fall to chance, so they guard the whole pipeline's input.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..models.ridge import cv_ridge_predict, r2_per_column
from ..io import DataError, require_file
from .nsd import NSDLayout, read_image, read_roi
from .prep import Prepared
from .stimuli import COLOURS, SHAPES
from .synthetic import noise_ceiling

THUMB = 8  # thumbnails are THUMB x THUMB grey images


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) uint8 -> (n, THUMB * THUMB) mean grey value per block, in [0, 1]."""
    n, s = images.shape[:2]
    grey = images.astype(np.float32).mean(-1) / 255.0
    f = s // THUMB
    return grey[:, : f * THUMB, : f * THUMB].reshape(n, THUMB, f, THUMB, f).mean((2, 4)).reshape(n, -1)


def ridge_sanity(prepared: Prepared, subject, alphas, folds: int, seed: int,
                 source: str = "voxels") -> dict:
    """Decode stimulus properties from one subject's training trials, cross-validated.

    Always: thumbnail pixels (R^2 averaged over pixels). Synthetic world: the primary
    object's position (R^2 of x, y) and its colour / shape (accuracy of a one-hot ridge).
    """
    rows = prepared.rows(subject, "train")
    X = prepared.voxels(subject, "train") if source == "voxels" else \
        prepared.flatmaps(subject, "train").reshape(len(rows), -1)
    ids = rows.nsd_id.to_numpy()
    targets = {"thumbnail": thumbnails(prepared.images(ids))}
    has_attrs = (prepared.root / "attributes.csv").exists()
    if has_attrs:
        attrs = prepared.attributes(ids)
        targets["position"] = attrs[["x_0", "y_0"]].to_numpy(np.float64)
        targets["colour"] = pd.get_dummies(pd.Categorical(attrs.colour_0, categories=list(COLOURS))).to_numpy(float)
        targets["shape"] = pd.get_dummies(pd.Categorical(attrs.shape_0, categories=list(SHAPES))).to_numpy(float)
    Y = np.concatenate(list(targets.values()), 1)
    pred, _ = cv_ridge_predict(X, Y, alphas, folds, seed)
    out, col = {"subject": str(subject), "n_trials": len(rows)}, 0
    for name, y in targets.items():
        p = pred[:, col:col + y.shape[1]]
        col += y.shape[1]
        if name in ("colour", "shape"):
            out[f"{name}_accuracy"] = float((p.argmax(1) == y.argmax(1)).mean())
            out[f"{name}_chance"] = float(y.mean(0).max())  # always guessing the commonest class
        else:
            out[f"{name}_r2"] = float(np.nanmean(r2_per_column(y, p)))
        out[f"_pred_{name}"], out[f"_true_{name}"] = p, y
    return out


def noise_ceilings(layout: NSDLayout, subj: int, n_avg: int = 3) -> np.ndarray:
    """Noise ceiling (%) of every nsdgeneral voxel, from the subject's ncsnr volume."""
    roi, _ = read_roi(layout, subj, "nsdgeneral")
    path = require_file(layout.volume_ncsnr(subj), f"ncsnr of subject {subj}",
                        "NSD ships it beside the betas (betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz).")
    ncsnr, _ = read_image(path)
    if ncsnr.shape != roi.shape:
        raise DataError(f"{path} has shape {ncsnr.shape} but the nsdgeneral ROI has {roi.shape}.")
    return noise_ceiling(ncsnr[roi > 0].astype(np.float64), n_avg)
