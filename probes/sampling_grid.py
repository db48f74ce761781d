"""Probe: how the sampler's settings (classifier-free guidance scale, control scale alpha)
move NeuroPictor's Table 1 metrics, on the pipeline's refined model of `--subject`.

No training: reads `paths.models`/refine_subjN as `make repro` left it and samples the
subject's 100 shared test scans once per (guidance, alpha) pair, scored as stage 05 scores.
A check of where the sampler, not the model, sets a metric (e.g. SSIM falling with alpha
while PixCorr rises). ~15 s a pair on 2 cores.

    python probes/sampling_grid.py --guidance 2 3 5 7.5 --alpha 0 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from common import KEEP, probe_world  # probes/common.py (this folder is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.0, 3.0, 5.0, 7.5])
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--out", default="probes/results/sampling_grid.json")
    args = ap.parse_args()
    cfg = load_params()
    prepared, found, networks, mask, ids, maps, gt = probe_world(cfg, args.subject)
    model = decoding.load_model(cfg.path("models") / f"refine_subj{args.subject}",
                                decoding.build_neuropictor(cfg, found, mask, "refine")).eval()
    rows = []
    for g in args.guidance:
        gcfg = load_params(overrides={"reconstruction.guidance": g})
        for a in args.alpha:
            with torch.no_grad():
                rec = reconstruct_images(model, found, maps, gcfg, alpha=a)
            s = score_reconstructions(gt, rec, ids, found, prepared, cfg.world == "synthetic", networks)
            rows.append({"guidance": g, "alpha": a, **{k: round(s[k], 4) for k in KEEP}})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
