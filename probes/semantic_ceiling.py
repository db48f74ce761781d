"""Probe: how far is NeuroPictor's CLIP† from what its semantic condition could give?

Each candidate semantic condition for a subject's shared test scans is drawn by the frozen
text-to-image pipeline alone (no LLMN, no img2img; notebook 05's "each semantic condition
alone": CFG against the empty caption, the run's seed) and scored like Table 1:

- NeuroPictor F^sem (the refined model's, as sampling uses it) and its F~txt (without F^au);
- ridge c: Takagi & Nishimoto's ridge from the voxels to the caption states (penalty by
  leave-one-out), i.e. what a linear read-out of the same scans gives;
- the true caption states (the ceiling the foundation allows).

With each row its R^2 against the true caption states. Not part of a pipeline; about
1.5 min per subject on 2 cores.

    python probes/semantic_ceiling.py [--subjects 1 2 5 7] [--out probes/results/semantic_ceiling.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import KEEP, load_world
from neuropictor.config import load_params
from neuropictor.decoding import build_neuropictor, caption_states, load_model
from neuropictor.evaluation import held_out, sampling_steps, score_reconstructions
from neuropictor.methods import r2_score, subject_data
from neuropictor.methods.base import ridge_fit_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=None)
    parser.add_argument("--out", default="probes/results/semantic_ceiling.json")
    args = parser.parse_args()
    cfg = load_params()
    world = load_world(cfg)
    found = world.found
    empty = caption_states(found.pipe, [""])
    rows = []
    for s in args.subjects or list(cfg.neuropictor.refine_subjects):
        t = time.time()
        ids, maps, gt = held_out(world.prepared, s)
        data = subject_data(cfg, world.prepared, s)
        if not np.array_equal(data.ids_test, ids):
            raise RuntimeError(f"subject {s}: the voxel and flatmap test rows are not the same images in the same order")
        refined = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, found, world.mask, "refine"))
        with torch.no_grad():
            _, F_txt, F_sem = refined.conditions(torch.as_tensor(maps))
        conditions = {"NeuroPictor F^sem": F_sem, "NeuroPictor F~txt": F_txt,
                      "ridge c (voxels)": ridge_fit_predict(data.x_train, data.c_train, data.x_test, cfg.prep.ridge.alphas),
                      "true caption states": data.c_test}
        for name, c in conditions.items():
            c = c.float()
            drawn = found.pipe(prompt_embeds=c, negative_prompt_embeds=empty.expand(len(c), -1, -1),
                               num_inference_steps=sampling_steps(cfg), guidance_scale=cfg.reconstruction.guidance,
                               generator=torch.Generator().manual_seed(cfg.seed),
                               output_type="pt").images.float().clamp(0, 1)
            scores = score_reconstructions(gt, drawn, ids, found, world.prepared, cfg.world == "synthetic",
                                           world.networks)
            rows.append({"subject": s, "condition": name, "R^2 vs caption states": r2_score(c, data.c_test),
                         **{k: scores[k] for k in KEEP if k in scores}})
        print(f"subject {s}: {time.time() - t:.0f} s")
    table = pd.DataFrame(rows)
    print(table.groupby("condition", sort=False).mean(numeric_only=True).drop(columns="subject").round(3).to_string())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
