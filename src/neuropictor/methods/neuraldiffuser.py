"""NeuralDiffuser (Li et al. 2024): primary visual feature guidance. Three decoders from the
voxels: the VAE latent z, the text states c and g, the CLIP image tower's layer-wise token
features; img2img from the decoded z conditioned on c, with the gradient guidance of
`sample.Guide` on the first eta of the reverse steps:

    loss(x0_hat) = sum_l w_l * MSE(CLIP_l(VAE.decode(x0_hat)), g_l) / ||g_l||

NeuralDiffuser hooks six blocks (2, 4, ..., 12) of CLIP ViT-B/32 with w = (1.5, 1.2, 1, 1, 1,
1); the synthetic foundation's image tower has six blocks and every one is hooked
(`methods.neuraldiffuser.layers`). The decoders here are ridge (penalty by leave-one-out), as
Takagi & Nishimoto's: the paper's MindEye2-style decoders are not rebuilt, so kappa = 0 is
the Takagi row drawn with the same seed, and what guidance adds is measured on the same
decoded features.

    decoded = fit_decode(cfg, data)                       # z, c and extra["g"]
    guide = feature_guide(found, decoded.extra["g"], cfg.methods.neuraldiffuser)
    images = draw(found, decoded, cfg, strength, guide=guide)
"""
from __future__ import annotations

import torch

from ..config import Settings
from ..io import DataError
from .base import Decoded, SubjectData, _batches, ridge_fit_predict


def vision_tower(found):
    """The image tower whose blocks are hooked: the synthetic foundation's CLIP vision model."""
    if found.clip is None:
        raise DataError("NeuralDiffuser's guidance needs a CLIP image tower with hookable blocks; the paper world's "
                        "(CLIP ViT-B/32) is not wired into this repository yet: run it in the synthetic world, "
                        "or add the tower to models/pretrained.py.")
    return found.clip.vision_model


def layer_features(tower, images: torch.Tensor, layers) -> list[torch.Tensor]:
    """Images (n, 3, H, W) in [0, 1] (differentiable) -> [(n, tokens, width)] at each
    1-based block in `layers`: the block's output tokens, class token included."""
    from ..models.foundation import clip_pixels

    hidden = tower(pixel_values=clip_pixels(images), output_hidden_states=True).hidden_states
    if max(layers) >= len(hidden) or min(layers) < 1:
        raise ValueError(f"layers {list(layers)} outside the tower's blocks 1..{len(hidden) - 1}")
    return [hidden[layer] for layer in layers]


@torch.no_grad()
def image_features(tower, images, layers) -> list[torch.Tensor]:
    """layer_features of a split, in batches (a tensor or `StreamedImages`)."""
    parts = [layer_features(tower, batch, layers) for batch in _batches(images)]
    return [torch.cat(p) for p in zip(*parts)]


def decode_features(cfg: Settings, data: SubjectData, found, train_rows=None, test_x=None) -> list[torch.Tensor]:
    """Ridge-decoded layer features g of the test scans (or of `test_x`), one fit per layer;
    `train_rows`: fit on these training rows only (choosing kappa on training data)."""
    P = cfg.methods.neuraldiffuser
    tower = vision_tower(found)
    x_train = data.x_train if train_rows is None else data.x_train[train_rows]
    x_test = data.x_test if test_x is None else test_x
    targets = image_features(tower, data.images_train, P.layers)
    if train_rows is not None:
        targets = [t[train_rows] for t in targets]
    return [ridge_fit_predict(x_train, t, x_test, cfg.prep.ridge.alphas) for t in targets]


def fit_decode(cfg: Settings, data: SubjectData, found, seed: int = 0) -> Decoded:
    """Ridge for z, c (with captions) and the layer features g (extra["g"]). Deterministic."""
    alphas = cfg.prep.ridge.alphas
    z = ridge_fit_predict(data.x_train, data.z_train, data.x_test, alphas)
    c = ridge_fit_predict(data.x_train, data.c_train, data.x_test, alphas) if data.text else None
    return Decoded(z=z, c=c, extra={"g": decode_features(cfg, data, found)})


def held_out_decoders(cfg: Settings, data: SubjectData, found, fit_rows, held_rows):
    """The three decoders refitted on the training rows `fit_rows` and applied to the training
    scans `held_rows` (choosing kappa without the test set) -> (Decoded(z, c), g)."""
    alphas = cfg.prep.ridge.alphas
    x_fit, x_held = data.x_train[fit_rows], data.x_train[held_rows]
    decoded = Decoded(z=ridge_fit_predict(x_fit, data.z_train[fit_rows], x_held, alphas),
                      c=ridge_fit_predict(x_fit, data.c_train[fit_rows], x_held, alphas))
    return decoded, decode_features(cfg, data, found, train_rows=fit_rows, test_x=x_held)


def feature_loss(vae, tower, targets: list[torch.Tensor], layers, weights):
    """The guidance loss of the rows `rows`: sum_l w_l * MSE(CLIP_l(x0_hat decoded), g_l) / ||g_l||
    per row, for `sample.Guide` (x0_hat: VAE-scaled latents)."""
    if len(targets) != len(layers) or len(weights) != len(layers):
        raise ValueError(f"{len(targets)} target layers, {len(layers)} layers and {len(weights)} weights")
    norms = [t.flatten(1).norm(dim=1).clamp_min(1e-8) for t in targets]

    def loss(x0: torch.Tensor, rows: slice) -> torch.Tensor:
        images = vae.decode(x0 / vae.config.scaling_factor).sample / 2 + 0.5  # not clamped: gradients pass
        feats = layer_features(tower, images, layers)
        total = 0
        for w, f, g, norm in zip(weights, feats, targets, norms):
            g = g[rows].to(f)
            total = total + w * (f - g).pow(2).flatten(1).mean(1) / norm[rows].to(f)
        return total
    return loss


def feature_guide(found, g: list[torch.Tensor], kappa: float, eta: float, cfg: Settings):
    """sample.Guide for decoded features g (rows aligned with the latents drawn)."""
    from ..sample import Guide

    P = cfg.methods.neuraldiffuser
    return Guide(feature_loss(found.pipe.vae, vision_tower(found), g, P.layers, P.weights), scale=kappa, share=eta)


def draw_guided(found, decoded: Decoded, g: list[torch.Tensor], kappa: float, cfg: Settings,
                eta: float | None = None, seed: int | None = None) -> torch.Tensor:
    """`decoded` drawn by the shared sampler with the feature guidance towards g at kappa and
    eta (default `methods.neuraldiffuser.eta`); kappa = 0 is the unguided drawing."""
    from .base import draw

    P = cfg.methods.neuraldiffuser
    guide = feature_guide(found, g, kappa, P.eta if eta is None else eta, cfg) if kappa else None
    return draw(found, decoded, cfg, P.strength, seed=seed, guide=guide)


# --------------------------------------------------------------------------- the studies' scores
GUIDED_METRICS = ("AlexNet(2)", "AlexNet(5)", "CLIP")  # identification scores the studies report
STUDY_METRICS = ("SSIM", "AlexNet(2)†", "AlexNet(5)†", "CLIP†", "PixCorr", "FID†")  # the columns they print


def study_networks(found):
    """The world's metric networks, cut to GUIDED_METRICS (PixCorr and SSIM need none)."""
    from ..metrics import MetricNetworks

    nets = found.metric_networks()
    return MetricNetworks(features={k: v for k, v in nets.features.items() if k in GUIDED_METRICS},
                          stand_in=nets.stand_in, input_size=nets.input_size)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between two sets of embeddings (n, d) (FID's formula)."""
    import numpy as np
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def scores(found, networks, stimuli: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """PixCorr, SSIM, GUIDED_METRICS and FID† (the image-quality proxy: FID's Fréchet distance
    on the Inception† stand-in's pooled features of the drawings vs their stimuli; lower is
    better; a different network from the CLIP tower the guidance pulls on)."""
    from ..metrics import INPUT_SIZE, evaluate

    out = evaluate(stimuli, images, networks)
    inception = found.metric_networks().features.get("Inception")
    if inception is not None:
        size = networks.input_size.get("Inception", INPUT_SIZE["Inception"])

        def feats(x):
            with torch.no_grad():
                return torch.cat([inception(torch.nn.functional.interpolate(x[s:s + 64], size=(size, size),
                                                                            mode="bilinear", align_corners=False))
                                  for s in range(0, len(x), 64)]).float()
        out["FID†"] = frechet_distance(feats(images), feats(stimuli))
    return out


def study_scores(found, networks, stimuli: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """`scores` cut to STUDY_METRICS, in that order (FID† only where the world has Inception†)."""
    out = scores(found, networks, stimuli, images)
    return {k: out[k] for k in STUDY_METRICS if k in out}
