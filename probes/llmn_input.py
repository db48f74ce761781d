"""Probe: does the LLMN act once its feature transformation sees what differs between scans?

Read on the refined model, E_ft's map F_0^l is nearly the same for every scan (its s.d.
across scans is a tenth of its magnitude): S^r is dominated by what every scan shares (the
positional part of the encoder's tokens), so the ControlNet copy learns a constant bias.
This probe trains the pipeline's two stages (multi-subject pretraining, refining on
`--subject`) with E_ft reading S^r standardised per feature over the batch (torch's
BatchNorm1d without affine parameters: running statistics at evaluation), and scores the
subject's test images at alpha 0 and 1 (the alpha sweep's ends) next to the pipeline's
refined model, with F_0^l's spread across scans. Not part of a pipeline; ~10 min.

    python probes/llmn_input.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from common import pretrain, probe_world, refine  # probes/common.py (this folder is on sys.path when run as a script)

KEEP = ("PixCorr", "SSIM", "AlexNet(2)†", "CLIP†", "EffNet-B†", "shape accuracy", "colour accuracy")


class Standardised(nn.Module):
    """S^r (n, L_r, d_r) standardised per feature over the batch, then the wrapped E_ft."""

    def __init__(self, transform: nn.Module, L_r: int, d_r: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(L_r * d_r, affine=False)
        self.transform = transform

    def forward(self, S_r: torch.Tensor) -> torch.Tensor:
        return self.transform(self.norm(S_r.flatten(1)).reshape(S_r.shape))


def with_standardised_input(model):
    ft = model.llmn.feature_transform
    L_r, d_r = model.encoder.tokens(model.switches.encoder_output), model.encoder.width
    model.llmn.feature_transform = Standardised(ft, L_r, d_r)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--out", default="probes/results/llmn_input.json")
    args = ap.parse_args()
    cfg = load_params()
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    pre = pretrain(cfg, world, with_standardised_input)
    model = refine(cfg, world, pre, args.subject, with_standardised_input)
    pipeline = decoding.load_model(cfg.path("models") / f"refine_subj{args.subject}",
                                   decoding.build_neuropictor(cfg, found, mask, "refine"))
    out = {}
    for name, m in (("E_ft on standardised S^r", model.eval()), ("pipeline", pipeline.eval())):
        with torch.no_grad():
            F0 = m.llmn.feature_transform(m.conditions(torch.as_tensor(maps))[0])
        row = {"F_0 s.d. across scans": float(F0.std(0).mean()), "F_0 mean magnitude": float(F0.abs().mean())}
        for alpha in (0.0, 1.0):
            s = score_reconstructions(gt, reconstruct_images(m, found, maps, cfg, alpha=alpha), ids, found, prepared,
                                      cfg.world == "synthetic", networks)
            row.update({f"{k} (alpha {alpha:g})": round(s[k], 4) for k in KEEP})
        out[name] = row
        print(name, json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
