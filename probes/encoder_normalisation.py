"""Does calibrated encoding transfer to task maps? The guide-token MAE trained on the
resting-state corpus normalised each way (`prep.corpus_zscore`: `map`, each map z-scored
across its vertices, the earlier default; `vertex`, each vertex across a participant's maps,
as prep z-scores task maps per vertex across a session), same steps and seed, then read on
held-out corpus subjects and on the shared test images' task flatmaps, against their
split-half reliability (models.fmri_encoder.split_half_readout). Needs `dvc repro prep`;
~6 min on 2 cores. Measured (default world, seed 0): held-out corpus median r 0.76 (map) /
0.20 (vertex); task maps 0.017 / 0.100; share of the repeatable signal kept 0.21 / 0.74.

    python probes/encoder_normalisation.py [--out probes/results/encoder_normalisation.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neuropictor.compute import train_settings
from neuropictor.config import load_params
from neuropictor.data.flatmap import build_flatmap
from neuropictor.data.nsd import NSDLayout, read_fsaverage_label
from neuropictor.data.prep import Prepared, prepare_corpus
from neuropictor.decoding import encoder_spec
from neuropictor.models.fmri_encoder import FlatmapMAE, mae_loss, recon_correlation, split_half_readout, summarise_split_half
from neuropictor.train import TensorBatches, TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ways", nargs="+", default=["map", "vertex"])
    ap.add_argument("--out", default="probes/results/encoder_normalisation.json")
    args = ap.parse_args()
    cfg = load_params()
    prepared = Prepared(cfg.path("prepared"))
    mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
    roi = read_fsaverage_label(NSDLayout(cfg.path("nsd_root")), cfg.prep.flatmap_roi) > 0
    flat = build_flatmap(roi, cfg.prep.flatmap_size, cfg.prep.flatmap_margin)
    e = cfg.encoder
    rows = {}
    for way in args.ways:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            prepare_corpus(dataclasses.replace(cfg, prep=dataclasses.replace(cfg.prep, corpus_zscore=way)), flat, Path(tmp))
            corpus = torch.from_numpy(np.load(Path(tmp) / "corpus_flatmaps.npy"))
            index = pd.read_csv(Path(tmp) / "corpus_index.csv")
        people = index.participant_id.unique()
        held = index.participant_id.isin(people[-e.holdout_corpus_subjects:]).to_numpy()
        torch.manual_seed(cfg.seed)
        model = FlatmapMAE(encoder_spec(cfg), torch.from_numpy(mask))
        fit(model, mae_loss, TensorBatches(corpus[~held]),
            TrainConfig(steps=e.steps, batch_size=e.batch_size, lr=e.lr, seed=cfg.seed, warmup=min(100, e.steps // 10),
                        log_every=50, **train_settings(cfg.compute)), None, desc=f"MAE ({way})")
        model.eval()

        @torch.no_grad()
        def rebuild(maps):
            maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
            return torch.cat([model(maps[s:s + 256]) for s in range(0, len(maps), 256)]).numpy()

        task = np.concatenate([recon_correlation(rebuild(m := prepared.flatmaps(s, "test")), m, mask)
                               for s in cfg.prep.subjects])
        split = summarise_split_half([split_half_readout(rebuild, prepared.flatmap_halves(s)[1], mask)
                                      for s in cfg.prep.subjects])
        rows[way] = {"corpus held-out median r": float(np.median(recon_correlation(rebuild(corpus[held]),
                                                                                   corpus[held], mask))),
                     "task median r": float(np.median(task)), **split, "minutes": round((time.time() - t0) / 60, 2)}
        print(way, json.dumps(rows[way], indent=1))
    print(pd.DataFrame(rows).round(3))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
