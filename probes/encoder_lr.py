"""Probe: does NeuroPictor's end-to-end training wipe out what calibration gave the encoder?

Read on the pipeline's models, a ridge classifier finds the scene's background colour in
the calibrated encoder's S^r (stage 03) far more often than in the refined model's S^r, and
SSIM follows the drawn background. This probe trains the pipeline's two stages (multi-
subject pretraining, refining on `--subject`) with the encoder's lr multiplied by each of
`--scales` (the HLGN and E_ft keep theirs), and reports per scale: the background read from
S^r by a ridge classifier (trained on the subject's training scans, scored on its test
scans), F~txt's R^2 against the caption states, and the Table 1 metrics of the test
reconstructions. The encoder's multiplier is not a params key yet: the probe adds it to
`decoding.lr_scales` for its own runs. Not part of a pipeline; 9.5 min per scale measured on 2 cores.

    python probes/encoder_lr.py --scales 0.1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeClassifierCV

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.features import FeatureStore
from neuropictor.methods import r2_score
from common import KEEP, pretrain, probe_world, refine, with_lr_scales  # probes/common.py (this folder is on sys.path when run as a script)


def background_read(model, world, subject: int) -> float:
    """Share of test scans whose background a ridge classifier on S^r (fit on training scans) names."""
    prepared = world.prepared
    train = prepared.rows(subject, "train")
    y_train = prepared.attributes(train.nsd_id.to_numpy()).background.to_numpy()
    y_test = prepared.attributes(world.ids).background.to_numpy()
    with torch.no_grad():
        S_train = model.conditions(torch.as_tensor(np.asarray(prepared.flatmaps(subject, "train"), np.float32)))[0]
        S_test = model.conditions(torch.as_tensor(world.maps))[0]
    clf = RidgeClassifierCV(alphas=np.logspace(-2, 6, 17)).fit(S_train.flatten(1).numpy(), y_train)
    return float((clf.predict(S_test.flatten(1).numpy()) == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.1])
    ap.add_argument("--out", default="probes/results/encoder_lr.json")
    args = ap.parse_args()
    cfg = load_params()
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    truth = FeatureStore(cfg.path("features")).states(ids)
    pipeline = decoding.load_model(cfg.path("models") / f"refine_subj{args.subject}",
                                   decoding.build_neuropictor(cfg, found, mask, "refine"))
    models = {"pipeline (encoder x 1)": (pipeline, None)}
    base = decoding.lr_scales
    for scale in args.scales:
        decoding.lr_scales = with_lr_scales({"encoder.": scale})
        t0 = time.time()
        models[f"encoder x {scale:g}"] = (refine(cfg, world, pretrain(cfg, world), args.subject), (time.time() - t0) / 60)
        decoding.lr_scales = base
    rows = []
    for name, (m, minutes) in models.items():
        m.eval()
        with torch.no_grad():
            F_txt = m.conditions(torch.as_tensor(maps))[1]
            rec = reconstruct_images(m, found, maps, cfg)
        s = score_reconstructions(gt, rec, ids, found, prepared, cfg.world == "synthetic", networks)
        rows.append({"model": name, "minutes": minutes and round(minutes, 2),
                     "background read from S^r": background_read(m, world, args.subject),
                     "F~txt R^2": round(r2_score(F_txt, truth), 4),
                     **{k: round(s[k], 4) for k in KEEP}})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
