"""Reconstruct a test set with a trained NeuroPictor and score it: what Table 1 (notebook 05)
and Table 2 (notebook 06) both do.

    rec = reconstruct_images(model, found, maps, cfg)
    scores = score_reconstructions(gt, rec, ids, found, prepared, synthetic=True)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .config import Settings
from .metrics import evaluate
from .models.foundation import images_of
from .sample import decode, reconstruct


class HeldOut(NamedTuple):
    ids: np.ndarray  # nsd_id per test row
    maps: np.ndarray  # (n, H, W) float32 flatmaps
    images: torch.Tensor  # (n, 3, H, W) stimuli in [0, 1]


def held_out(prepared, subject: int) -> HeldOut:
    """A subject's shared test split: the image ids, the subject's flatmaps and the stimuli."""
    ids = prepared.rows(subject, "test").nsd_id.to_numpy()
    return HeldOut(ids, np.asarray(prepared.flatmaps(subject, "test"), dtype=np.float32), images_of(prepared, ids))


def split_metrics(columns) -> tuple[list[str], list[str]]:
    """Metric columns -> (the Table 1 suite, the synthetic world's attribute metrics)."""
    attribute = [c for c in columns if "accuracy" in c or "error" in c]
    return [c for c in columns if c not in attribute], attribute


def metrics_ahead(a, b, suite) -> list[str]:
    """Metrics of `suite` on which row `a` beats row `b` (mappings metric -> score): higher is
    better except for the distances (EffNet-B, SwAV), whose columns may carry a † suffix."""
    from .metrics import LOWER_IS_BETTER

    lower = tuple(LOWER_IS_BETTER)
    return [c for c in suite if (a[c] < b[c] if c.startswith(lower) else a[c] > b[c])]


def sampling_steps(cfg: Settings) -> int:
    """DDIM steps in force: `reconstruction.steps`, or a few in smoke runs."""
    R = cfg.reconstruction
    return max(2, min(R.steps, cfg.foundation.smoke_steps)) if cfg.smoke else R.steps


def reconstruct_images(model, found, maps, cfg: Settings, alpha: float | None = None,
                       semantic_maps=None, guide=None) -> torch.Tensor:
    """Flatmaps -> images (n, 3, H, W) in [0, 1]: DDIM with classifier-free guidance
    (`reconstruction.guidance`), control scale alpha (default `reconstruction.alpha`) and
    gradient guidance `guide` (a `sample.Guide`, rows aligned with `maps`) if given."""
    R = cfg.reconstruction
    z = reconstruct(model, model.noise_scheduler, torch.as_tensor(maps), steps=sampling_steps(cfg),
                    guidance=R.guidance, alpha=R.alpha if alpha is None else alpha, seed=cfg.seed,
                    semantic_maps=semantic_maps, batch_size=100, progress=False, guide=guide)
    return decode(found.pipe.vae, z)


def score_reconstructions(gt: torch.Tensor, rec: torch.Tensor, ids, found, prepared, synthetic: bool,
                          networks=None) -> dict[str, float]:
    """The eight Table 1 metrics (`networks`, default the world's `found.metric_networks()`)
    and, in the synthetic world, the attribute metrics of the reconstructions against their
    stimuli's true attributes."""
    from .models.standins import attribute_metrics, predict_attributes

    out = evaluate(gt, rec, found.metric_networks() if networks is None else networks)
    if synthetic:
        out.update(attribute_metrics(predict_attributes(found.standins["attribute_net"], rec),
                                     prepared.attributes(ids)))
    return out
