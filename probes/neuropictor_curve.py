"""Learning curve of NeuroPictor's multi-subject pretraining (issue 14): how the pretrained
model ("w/o ft") decodes subject `--subject`'s shared test scans as pretraining sees more
samples, with L_sem off in pretraining (`--lambdas 0`: the released code, the pipeline's
default) and on (e.g. 0.1: the paper's text has it throughout).

Every `--eval-every` steps, on the test scans: the validation L_dif (fixed noise and
timesteps, no caption dropped), the semantic readout R^2 of F~txt against the caption states
(as notebook 07 reads it), and PixCorr, SSIM and CLIP† of the reconstructions drawn by the
pipeline's sampler (DDIM, CFG, alpha as in params). One run per lambda, the pipeline's
schedule (warm-up, cosine decay) stretched to `--steps`: a point at step k is a model
mid-schedule, not one trained for k steps, so the curve says whether more samples keep
paying, not the exact value of each budget. The pipeline's final "mask" phase is left out.
Needs `make repro` up to the features and encoder stages.

    python probes/neuropictor_curve.py --steps 2400 --eval-every 400 --lambdas 0 0.1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import torch

from neuropictor import decoding
from neuropictor.compute import train_settings
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.features import FeatureStore
from neuropictor.methods import r2_score
from neuropictor.models.neuropictor import neuropictor_loss
from neuropictor import train as train_module
from neuropictor.train import TrainConfig, fit

from common import probe_world  # probes/common.py (this folder is on sys.path when run as a script)

METRICS = ("PixCorr", "SSIM", "CLIP†")


def validation_l_dif(model, data, seed: int = 12345, batch: int = 50) -> float:
    """L_dif on every pair of `data` with draws fixed by `seed` (the same at every point).
    Called inside `fit`, whose step-seeded draws are switched off meanwhile (outside `fit`
    BatchDraws takes the global RNG, seeded here)."""
    saved, train_module._STEP_DRAWS = train_module._STEP_DRAWS, None
    try:
        values, rows = [], torch.arange(len(data))
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch):
            part = data[rows[start:start + batch]]
            model(*part)
            values.append(float(model.loss_terms["L_dif"]) * len(part[0]))
    finally:
        train_module._STEP_DRAWS = saved
    return sum(values) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--images", type=int, default=None, help="only the first N test images (a quick check)")
    ap.add_argument("--out", default="probes/results/neuropictor_curve.json")
    ap.add_argument("--figure", default="figures/training/learning_curve.png")
    args = ap.parse_args()
    cfg = load_params()
    prepared, found, networks, mask, ids, maps, gt = probe_world(cfg, args.subject)
    ids, maps, gt = ids[:args.images], maps[:args.images], gt[:args.images]
    truth = FeatureStore(cfg.path("features")).states(ids)
    train = decoding.decoding_data(cfg, prepared, list(cfg.prep.subjects), "train")
    test = decoding.decoding_data(cfg, prepared, [args.subject], "test")
    loop = cfg.neuropictor.pretrain
    rows = []
    for lam in args.lambdas:
        model = decoding.build_neuropictor(cfg, found, mask, "pretrain")
        model.switches = dataclasses.replace(model.switches, lambda_sem=lam, empty_rate=0.0)
        t0 = time.time()

        def evaluate(m, lam=lam, t0=t0):
            with torch.no_grad():
                _, F_txt, _ = m.conditions(torch.as_tensor(maps))
                scores = score_reconstructions(gt, reconstruct_images(m, found, maps, cfg), ids, found, prepared,
                                               cfg.world == "synthetic", networks)
                row = {"lambda_sem": lam, "val L_dif": validation_l_dif(m, test),
                       "semantic R2": r2_score(F_txt, torch.as_tensor(truth)), **{k: scores[k] for k in METRICS},
                       "minutes": round((time.time() - t0) / 60, 2)}
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
            return row

        tc = TrainConfig(steps=args.steps, batch_size=loop.batch_size, lr=loop.lr, seed=cfg.seed,
                         lr_scales=decoding.lr_scales(model, loop),
                         warmup=min(50, args.steps // 10), ckpt_every=10 ** 9, log_every=100,
                         eval_every=args.eval_every, **train_settings(cfg.compute))
        rows.append(dict(evaluate(model.eval()), step=0, samples=0))  # the untrained start
        history = fit(model.train(), neuropictor_loss, train, tc, None, desc=f"pretrain (L_sem {lam:g})",
                      evaluate=evaluate)
        rows += [dict(h, samples=h["step"] * loop.batch_size) for h in history if "val L_dif" in h]
    table = pd.DataFrame(rows)
    print(table.round(4).to_string(index=False))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "steps": args.steps, "rows": rows}, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = ("val L_dif", "semantic R2", *METRICS)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3))
    for ax, key in zip(axes, panels):
        sns.lineplot(data=table, x="samples", y=key, hue="lambda_sem", marker="o", ax=ax, palette="tab10")
        ax.set_title(key)
    fig.suptitle(f"NeuroPictor pretraining, subject {args.subject}'s test scans (w/o ft), by L_sem in pretraining")
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)


if __name__ == "__main__":
    main()
