"""Brain-Diffuser-style (Ozcelik & VanRullen 2023), the system the two-stage GRU paper
improves on: ridge from voxels to the first `methods.brain_diffuser.groups` latent groups of
the hierarchical VAE (VDVAE's role) -> a coarse image, then img2img through the foundation
pipeline conditioned on ridge-decoded text states. (Brain-Diffuser's second stage also takes
decoded CLIP image features; this world's UNet is text-conditioned only.)"""
from __future__ import annotations

from ..config import Settings
from .base import Decoded, SubjectData, ridge_fit_predict


def decode_groups(cfg: Settings, data: SubjectData, groups: int):
    """Ridge-decoded first `groups` hierarchical-VAE groups (n, d) and their coarse images."""
    flat = ridge_fit_predict(data.x_train, data.hvae_latents("train", groups), data.x_test, cfg.prep.ridge.alphas)
    return flat, data.hvae_decode(flat, groups)


def fit_decode(cfg: Settings, data: SubjectData, seed: int = 0) -> Decoded:
    flat, coarse = decode_groups(cfg, data, cfg.methods.brain_diffuser.groups)
    c = ridge_fit_predict(data.x_train, data.c_train, data.x_test, cfg.prep.ridge.alphas) if data.text else None
    return Decoded(coarse=coarse, c=c, extra={"latents": flat})
