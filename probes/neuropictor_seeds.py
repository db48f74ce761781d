"""NeuroPictor's Table 1 row under other seeds (issue 14: every comparison with its spread).

The world, its split and every voxel method stay as the pipeline made them; only
NeuroPictor's training and sampling seed changes (`seed` seeds the model's initialisation,
the batches and noise draws of training, and the DDIM start noise). For each seed in
`--seeds`: multi-subject pretraining, refining on each of `neuropictor.refine_subjects`,
both scored on every refined subject's shared test images as notebook 07 scores them (but
from float images, not the 8-bit PNG copies: differences of 0.1 point). The pipeline's own
run (params' seed, read from `tables/table1_per_subject.csv` and `metrics/table1.json`) is
the other seed. Prints, per seed, the 4-subject averages and the issue's counts (ahead of
the ridge, refined ahead of w/o ft), and the spread (max - min over seeds) per metric.
~13 min per seed on 2 cores after `make repro`.

    python probes/neuropictor_seeds.py --seeds 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from neuropictor.config import load_params
from neuropictor.evaluation import held_out, metrics_ahead, reconstruct_images, score_reconstructions, split_metrics

from common import load_world, pretrain, refine  # probes/common.py (this folder is on sys.path when run as a script)

RIDGE, NP, WO_FT = "Takagi & Nishimoto (ridge)", "NeuroPictor", "NeuroPictor (w/o ft)"


def train_and_score(cfg, world) -> dict[str, pd.DataFrame]:
    """One seed: pretrain, refine each subject; per-subject scores of w/o ft and refined."""
    pre = pretrain(cfg, world, desc=f"seed {cfg.seed} pretrain")
    rows = {WO_FT: [], NP: []}
    for subject in cfg.neuropictor.refine_subjects:
        model = refine(cfg, world, pre, subject, desc=f"seed {cfg.seed} refine {subject}")
        ids, maps, gt = held_out(world.prepared, subject)
        for name, m in ((WO_FT, pre), (NP, model)):
            s = score_reconstructions(gt, reconstruct_images(m, world.found, maps, cfg), ids, world.found,
                                      world.prepared, cfg.world == "synthetic", world.networks)
            rows[name].append(dict(s, subject=subject))
            print(f"seed {cfg.seed} subject {subject} {name}: CLIP† {s.get('CLIP†', float('nan')):.3f}", flush=True)
    return {k: pd.DataFrame(v).set_index("subject") for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default="probes/results/neuropictor_seeds.json")
    args = ap.parse_args()
    base = load_params()
    table1 = json.loads((base.path("metrics") / "table1.json").read_text())["average"]
    cols, attributes = split_metrics(table1[NP])[0], ["shape accuracy", "colour accuracy"]
    per_subject = pd.read_csv(base.path("tables") / "table1_per_subject.csv")
    subjects = list(base.neuropictor.refine_subjects)
    ridge = per_subject[per_subject.method == RIDGE].set_index("subject").loc[subjects, cols].mean()
    averages = {base.seed: {NP: pd.Series(table1[NP])[cols + attributes],
                            WO_FT: pd.Series(table1[WO_FT])[cols + attributes]}}
    world = load_world(base)
    t0 = time.time()
    for seed in args.seeds:
        cfg = load_params(overrides={"seed": seed})
        scores = train_and_score(cfg, world)
        averages[seed] = {k: v[cols + attributes].mean() for k, v in scores.items()}
    report = {"subjects": subjects, "minutes": round((time.time() - t0) / 60, 1), "seeds": {}}
    for seed, rows in averages.items():
        ahead = metrics_ahead(rows[NP], ridge, cols)
        refined = metrics_ahead(rows[NP], rows[WO_FT], cols)
        report["seeds"][str(seed)] = {"NeuroPictor": rows[NP].round(4).to_dict(),
                                      "w/o ft": rows[WO_FT].round(4).to_dict(),
                                      "ahead of the ridge": ahead, "refined ahead of w/o ft": refined}
        print(f"seed {seed}: ahead of the ridge on {len(ahead)} of 8 {ahead}; refined ahead of w/o ft on "
              f"{len(refined)} of 8")
    frame = pd.DataFrame({f"seed {s}": r[NP] for s, r in averages.items()}).T
    report["spread (max - min)"] = (frame.max() - frame.min()).round(4).to_dict()
    print(pd.concat([frame, pd.DataFrame({"ridge": ridge}).T]).round(3).to_string())
    print("spread", report["spread (max - min)"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
