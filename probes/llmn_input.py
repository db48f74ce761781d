"""Probe: does the LLMN act only when its feature transformation sees what differs between scans?

With E_ft reading S^r as the encoder gives it (`neuropictor.llmn_input: raw`, the released
code), F_0^l came out nearly the same for every scan (its s.d. across scans a tenth of its
magnitude): S^r is dominated by what every scan shares (the positional part of the
encoder's tokens), so the ControlNet copy learnt a constant bias and the alpha sweep was flat.
This probe trains the pipeline's two stages (multi-subject pretraining, refining on
`--subject`) under the other `llmn_input` than params.yaml's (or `--input`), and scores the
subject's test images at alpha 0 and 1 (the alpha sweep's ends) next to the pipeline's
refined model, with F_0^l's spread across scans. Not part of a pipeline; ~10 min.

    python probes/llmn_input.py              # params.yaml: standardised, so this trains raw
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from common import pretrain, probe_world, refine  # probes/common.py (this folder is on sys.path when run as a script)

KEEP = ("PixCorr", "SSIM", "AlexNet(2)†", "CLIP†", "EffNet-B†", "shape accuracy", "colour accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--input", choices=("raw", "standardised"), help="default: the other than params.yaml's")
    ap.add_argument("--out", default="probes/results/llmn_input.json")
    args = ap.parse_args()
    cfg = load_params()
    other = args.input or ("raw" if cfg.neuropictor.llmn_input == "standardised" else "standardised")
    probe_cfg = load_params(overrides={"neuropictor.llmn_input": other})
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    model = refine(probe_cfg, world, pretrain(probe_cfg, world), args.subject)
    pipeline = decoding.load_model(cfg.path("models") / f"refine_subj{args.subject}",
                                   decoding.build_neuropictor(cfg, found, mask, "refine"))
    out = {}
    for name, m in ((f"E_ft on {other} S^r (this probe)", model.eval()),
                    (f"pipeline (E_ft on {cfg.neuropictor.llmn_input} S^r)", pipeline.eval())):
        with torch.no_grad():
            F0 = m.llmn.feature_map(m.conditions(torch.as_tensor(maps))[0])
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
