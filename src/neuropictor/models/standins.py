"""In-world stand-ins for the metric networks, and the synthetic world's attribute metrics.

The ImageNet weights of AlexNet, Inception, EfficientNet and SwAV cannot be had here, so the
synthetic world trains a small CNN to read the scene attributes (shape, colour, size,
position of the primary object; background). Its layers play the metric networks' roles,
and every table marks them with a dagger:

| metric       | stand-in                                            |
|--------------|-----------------------------------------------------|
| AlexNet(2)†  | AttributeNet block 1 (early, local edges/colour)    |
| AlexNet(5)†  | AttributeNet block 3 (late, object parts)           |
| Inception†   | AttributeNet pooled features (what the heads read)  |
| CLIP†        | the in-world CLIP image tower (foundation stage)    |
| EffNet-B†    | a second AttributeNet (other seed, wider), pooled   |
| SwAV†        | the VAE encoder's latent means (self-supervised)    |

The same network's heads are the attribute classifier of the synthetic-world metrics.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data.stimuli import BACKGROUNDS, COLOURS, SHAPES, SIZES

HEADS = {"shape": list(SHAPES), "colour": list(COLOURS), "size": list(SIZES), "background": list(BACKGROUNDS)}


class AttributeNet(nn.Module):
    """(n, 3, 64, 64) in [0, 1] -> logits per attribute and the primary object's (x, y)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = w = width

        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.block1 = block(3, w, 2)  # 32 x 32
        self.block2 = block(w, 2 * w, 2)  # 16 x 16
        self.block3 = block(2 * w, 4 * w, 2)  # 8 x 8
        self.block4 = block(4 * w, 4 * w, 1)
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, len(v)) for k, v in HEADS.items()})
        # position from the 8 x 8 map: a spatial read-out keeps where things are
        self.position = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 64, 2))

    def trunk(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - 0.5) / 0.25
        f1 = self.block1(x)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        f4 = self.block4(f3)
        # max-pooling: "is there a ring somewhere" is a detection, which a mean dilutes
        return {"early": f1, "mid": f2, "late": f3, "top": f4, "pooled": f4.amax((2, 3))}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.trunk(x)
        out = {k: head(t["pooled"]) for k, head in self.heads.items()}
        out["position"] = torch.sigmoid(self.position(t["top"]))
        return out

    def features(self, layer: str):
        """A feature function for `metrics.MetricNetworks` (eval mode, no grad)."""
        def fn(x: torch.Tensor) -> torch.Tensor:
            self.eval()
            with torch.no_grad():
                return self.trunk(x)[layer]
        return fn


def attribute_targets(attrs: pd.DataFrame) -> torch.Tensor:
    """Primary-object attributes -> (n, 6) tensor: class indices (4) then x, y."""
    cols = [attrs[f"{k}_0"] if k != "background" else attrs["background"] for k in HEADS]
    idx = [np.array([HEADS[k].index(v) for v in col]) for k, col in zip(HEADS, cols)]
    return torch.from_numpy(np.column_stack(idx + [attrs["x_0"].to_numpy(), attrs["y_0"].to_numpy()])).float()


def attribute_loss(model: AttributeNet, batch) -> torch.Tensor:
    x, y = batch
    out = model(x)
    loss = sum(F.cross_entropy(out[k], y[:, i].long()) for i, k in enumerate(HEADS))
    return loss + 20 * F.mse_loss(out["position"], y[:, 4:6])


@torch.no_grad()
def predict_attributes(model: AttributeNet, images: torch.Tensor, batch: int = 256) -> pd.DataFrame:
    """Attributes the classifier reads from images (n, 3, H, W) in [0, 1]."""
    model.eval()
    rows = []
    for s in range(0, len(images), batch):
        out = model(images[s:s + batch])
        part = {k: [HEADS[k][i] for i in out[k].argmax(1).tolist()] for k in HEADS}
        part["x"], part["y"] = out["position"][:, 0].tolist(), out["position"][:, 1].tolist()
        rows.append(pd.DataFrame(part))
    return pd.concat(rows, ignore_index=True)


def attribute_metrics(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Synthetic-world metrics of reconstructions: does the primary object have the stimulus's
    shape / colour / size, and how far (fraction of image width) is it from where it was?"""
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} stimuli")
    out = {f"{k} accuracy": float((pred[k].to_numpy() == truth[f"{k}_0"].to_numpy()).mean())
           for k in ("shape", "colour", "size")}
    d = np.hypot(pred["x"].to_numpy() - truth["x_0"].to_numpy(), pred["y"].to_numpy() - truth["y_0"].to_numpy())
    out["position error"] = float(d.mean())
    return out


def train_attribute_net(images: torch.Tensor, attrs: pd.DataFrame, width: int, cfg) -> AttributeNet:
    """Fit an AttributeNet on images (n, 3, H, W) in [0, 1] and their attribute table."""
    from ..train import TensorBatches, fit

    torch.manual_seed(cfg.seed)
    net = AttributeNet(width)
    fit(net, attribute_loss, TensorBatches(images, attribute_targets(attrs)), cfg, desc=f"attribute net (width {width})")
    return net.eval()


def standin_networks(attribute_net: AttributeNet, second_net: AttributeNet, clip=None, vae=None):
    """The synthetic world's `MetricNetworks` (all marked with a dagger), at the stimulus size."""
    from ..metrics import INPUT_SIZE, MetricNetworks

    feats = {"AlexNet(2)": attribute_net.features("early"), "AlexNet(5)": attribute_net.features("late"),
             "Inception": attribute_net.features("pooled"), "EffNet-B": second_net.features("pooled")}
    if clip is not None:
        from .foundation import clip_embed_images
        feats["CLIP"] = lambda x: clip_embed_images(clip, x)
    if vae is not None:
        def swav(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return vae.encode(2 * x - 1).latent_dist.mean
        feats["SwAV"] = swav
    size = 64  # stimuli are 64 px; the stand-ins were trained at that size
    return MetricNetworks(features=feats, stand_in=True, input_size={k: size for k in INPUT_SIZE})
