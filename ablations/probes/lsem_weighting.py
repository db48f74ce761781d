"""Probe: how NeuroPictor's L_sem weighting decides what it decodes at the default budget.

The pipeline follows the released code (L_sem off in multi-subject pretraining, 0.1 x the
element-wise mean in refining). This probe trains the same stages for one subject with
L_sem also on in pretraining at weight `--pretrain-lambda` (the paper's text has it
throughout), refines with `--refine-lambda`, and scores subject `--subject`'s shared test
images as stage 05 does, next to the pipeline's own refined model. Not part of a pipeline;
~10 min on 2 cores after `make repro`.

    .venv/bin/python ablations/probes/lsem_weighting.py --pretrain-lambda 0.1 --refine-lambda 0.1
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import neuropictor.decoding as decoding
from neuropictor.config import PROJ_ROOT, load_params
from neuropictor.data.prep import Prepared
from neuropictor.evaluation import held_out, reconstruct_images, score_reconstructions
from neuropictor.models.foundation import load_world_foundation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-lambda", type=float, default=0.1)
    ap.add_argument("--refine-lambda", type=float, default=0.1)
    ap.add_argument("--subject", type=int, default=1)
    args = ap.parse_args()
    cfg = load_params(PROJ_ROOT / "params.yaml", {"neuropictor.lambda_sem": args.refine_lambda})
    released = decoding.switches

    def switches(c, stage):  # the released code's switches, with L_sem in pretraining as asked
        s = released(c, stage)
        return replace(s, lambda_sem=args.pretrain_lambda) if stage == "pretrain" else s

    decoding.switches = switches
    prepared = Prepared(cfg.path("prepared"))
    found = load_world_foundation(cfg)
    networks = found.metric_networks()
    mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
    ids, maps, gt = held_out(prepared, args.subject)
    synthetic = cfg.world == "synthetic"
    t0 = time.time()
    pre = decoding.build_neuropictor(cfg, found, mask, "pretrain")
    data = decoding.decoding_data(cfg, prepared, found, list(cfg.prep.subjects), "train")
    decoding.train_neuropictor(pre.train(), data, cfg.neuropictor.pretrain, cfg.seed, None, desc="pretrain")
    model = decoding.build_neuropictor(cfg, found, mask, "refine")
    model.load_trainable(pre.trainable_state_dict(), strict=False)
    data = decoding.decoding_data(cfg, prepared, found, [args.subject], "train")
    decoding.train_neuropictor(model.train(), data, cfg.neuropictor.refine, cfg.seed, None, desc="refine")
    minutes = (time.time() - t0) / 60
    base = load_params(PROJ_ROOT / "params.yaml")
    decoding.switches = released
    pipeline = decoding.load_model(base.path("models") / f"refine_subj{args.subject}",
                                   decoding.build_neuropictor(base, found, mask, "refine"))
    rows = {f"L_sem {args.pretrain_lambda:g} in pretraining, {args.refine_lambda:g} refining": model.eval(),
            "pipeline (released code: 0 in pretraining, 0.1 refining)": pipeline.eval()}
    scores = {name: score_reconstructions(gt, reconstruct_images(m, found, maps, cfg), ids, found, prepared,
                                          synthetic, networks) for name, m in rows.items()}
    print(json.dumps({"subject": args.subject, "training_minutes": round(minutes, 1),
                      "rows": {k: {m: round(v, 4) for m, v in r.items()} for k, r in scores.items()}}, indent=1))


if __name__ == "__main__":
    main()
