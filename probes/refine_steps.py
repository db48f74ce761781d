"""Probe: does refining longer help once the LLMN acts? Refines the pipeline's multi-subject
pretrained model (`paths.models`/pretrain, as `make repro` left it) on `--subject` for each of
`--steps` (the mask phase kept at the pipeline's share of them) and scores the subject's 100
shared test scans at alpha 0 and 1, next to the pipeline's refined model. Not part of a
pipeline; ~1.6 min of training per 240 steps on 2 cores.

    python probes/refine_steps.py --steps 480 960
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from common import KEEP, probe_world, refine  # probes/common.py (this folder is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--steps", type=int, nargs="+", default=[480, 960])
    ap.add_argument("--out", default="probes/results/refine_steps.json")
    args = ap.parse_args()
    cfg = load_params()
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    pre = decoding.load_model(cfg.path("models") / "pretrain", decoding.build_neuropictor(cfg, found, mask, "pretrain"))
    loop = cfg.neuropictor.refine
    models = {f"pipeline ({loop.steps} + {loop.mask_steps})": (decoding.load_model(
        cfg.path("models") / f"refine_subj{args.subject}", decoding.build_neuropictor(cfg, found, mask, "refine")), None)}
    for steps in args.steps:
        c = load_params(overrides={"neuropictor.refine.steps": steps,
                                   "neuropictor.refine.mask_steps": round(steps * loop.mask_steps / loop.steps)})
        longer = c.neuropictor.refine
        t0 = time.time()
        models[f"{longer.steps} + {longer.mask_steps}"] = (refine(c, world, pre, args.subject), (time.time() - t0) / 60)
    rows = []
    for name, (m, minutes) in models.items():
        for a in (0.0, 1.0):
            with torch.no_grad():
                s = score_reconstructions(gt, reconstruct_images(m.eval(), found, maps, cfg, alpha=a), ids, found,
                                          prepared, cfg.world == "synthetic", networks)
            rows.append({"refine steps": name, "minutes": minutes and round(minutes, 2), "alpha": a,
                         **{k: round(s[k], 4) for k in KEEP}})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
