"""Takagi & Nishimoto (CVPR 2023): two ridge regressions from voxels, one to the image
latent z, one to the text condition c; img2img from the decoded z conditioned on c."""
from __future__ import annotations

from ..config import Settings
from .base import Decoded, SubjectData, ridge_fit_predict


def fit_decode(cfg: Settings, data: SubjectData, seed: int = 0) -> Decoded:
    """Ridge (penalty by leave-one-out over `prep.ridge.alphas`) for z and, with captions, c.
    Deterministic: `seed` only names the run."""
    alphas = cfg.prep.ridge.alphas
    z = ridge_fit_predict(data.x_train, data.z_train, data.x_test, alphas)
    c = ridge_fit_predict(data.x_train, data.c_train, data.x_test, alphas) if data.text else None
    return Decoded(z=z, c=c)
