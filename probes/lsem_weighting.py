"""Probe: how NeuroPictor's L_sem weighting decides what it decodes at the default budget.

Trains the pipeline's two stages (multi-subject pretraining, then refining on `--subject`)
under params overrides (`--set KEY VALUE`, repeated; values read as YAML; e.g. the
released code's L_sem, an element-wise mean, off in pretraining) and scores the subject's
shared test images as stage 05 does, w/o ft and refined, next to the pipeline's own models (`paths.models`, trained under
params.yaml as it is). Also the semantic readout R^2 of F~txt against the caption states, as
notebook 07 reads it. Not part of a pipeline; ~10 min on 2 cores after `make repro`.

    .venv/bin/python probes/lsem_weighting.py --set neuropictor.sem_loss mean \\
        --set neuropictor.sem_in_pretraining false
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

import neuropictor.decoding as decoding
from neuropictor.config import PROJ_ROOT, load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.features import FeatureStore
from neuropictor.methods import r2_score

from common import pretrain, probe_world, refine  # probes/common.py (this folder is on sys.path when run as a script)

KEEP = ("PixCorr", "SSIM", "AlexNet(2)†", "AlexNet(5)†", "Inception†", "CLIP†", "EffNet-B†", "SwAV†",
        "shape accuracy", "colour accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="a params override of the trained row (dotted key, YAML value); repeat for more")
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--out", default="probes/results/lsem_weighting.json")
    args = ap.parse_args()
    overrides = {key: yaml.safe_load(value) for key, value in args.set}
    base = load_params(PROJ_ROOT / "params.yaml")
    cfg = load_params(PROJ_ROOT / "params.yaml", overrides)
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    truth = FeatureStore(cfg.path("features")).states(ids)
    t0 = time.time()
    pre = pretrain(cfg, world)
    model = refine(cfg, world, pre, args.subject)
    minutes = (time.time() - t0) / 60
    models = base.path("models")
    pipeline_pre = decoding.load_model(models / "pretrain", decoding.build_neuropictor(base, found, mask, "pretrain"))
    pipeline = decoding.load_model(models / f"refine_subj{args.subject}",
                                   decoding.build_neuropictor(base, found, mask, "refine"))
    label = ", ".join(f"{k}={v}" for k, v in args.set) or "params.yaml"
    rows = {f"{label} (w/o ft)": pre, label: model, "pipeline (w/o ft)": pipeline_pre, "pipeline": pipeline}
    scores = {}
    for name, m in rows.items():
        m.eval()
        with torch.no_grad():
            _, F_txt, _ = m.conditions(torch.as_tensor(maps))
        s = score_reconstructions(gt, reconstruct_images(m, found, maps, cfg), ids, found, prepared,
                                  cfg.world == "synthetic", networks)
        scores[name] = {"semantic R2": round(r2_score(F_txt, truth), 4), **{k: round(s[k], 4) for k in KEEP}}
        print(name, json.dumps(scores[name]), flush=True)
    result = {"subject": args.subject, "overrides": overrides, "training_minutes": round(minutes, 1), "rows": scores}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
