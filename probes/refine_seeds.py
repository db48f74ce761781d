"""Probe: how much of NeuroPictor's run-to-run spread comes from refining alone, and does a
refining setting make the LLMN's effect (alpha 1 against alpha 0) outlast that spread?

The same code, params and seed re-run on two machines moved subject 1's PixCorr gain from
alpha 0 to 1 between +.018 and +.003 (README, "Same seed, two machines"). This probe holds
the pipeline's multi-subject pretrained model fixed (`paths.models`/pretrain, as `make repro`
left it) and refines `--subject` under each of `--seeds` for each of `--settings`, then
scores the subject's 100 shared test scans at alpha 0 and 1. `seed` seeds the auxiliary
encoder's initialisation, the batches, the noise and timesteps of training and the DDIM
start noise. A setting is `name:key=value,...` with keys of `neuropictor.refine`
(`steps` also scales `mask_steps` by the pipeline's share), dotted params keys (e.g.
`neuropictor.lambda_low=1`: then E_ft is regressed onto the latent in refining only, from a
pretraining without it, unless `--pretrain`) or `lr.<prefix>`, an lr
multiplier for the parameters whose names start with `<prefix>` (e.g. `lr.encoder.=0.1`,
`lr.llmn.manipulator.=3`), added to `decoding.lr_scales` for the probe's own runs;
`pipeline` is the params as they are. With `--pretrain` each run also pretrains (all
subjects, under the setting and seed) instead of starting from the pipeline's model.
Prints every run, then per setting the mean and spread (max - min) of each metric at alpha 1
and of the alpha 1 - alpha 0 difference. Not part of a pipeline;
about 3 min per run of 240 + 48 steps on 2 cores, 10 with `--pretrain`.

    python probes/refine_seeds.py --seeds 0 1 2 3 --settings pipeline "long:steps=480" "enc:lr.encoder.=0.1"
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.features import FeatureStore
from neuropictor.methods import r2_score
from common import KEEP, pretrain, probe_world, refine, with_lr_scales  # probes/common.py (this folder is on sys.path when run as a script)


def parse_setting(text: str) -> tuple[str, dict[str, float]]:
    """`name:key=value,...` (or a bare name: the params as they are) -> (name, {key: value})."""
    name, _, rest = text.partition(":")
    pairs = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"setting {text!r}: {item!r} is not key=value (e.g. long:steps=480)")
        pairs[key.strip()] = float(value)
    return name, pairs


def setting_params(pairs: dict[str, float], seed: int):
    """The params of one run: the refine loop's keys overridden, `steps` carrying the mask phase."""
    loop = load_params().neuropictor.refine
    over: dict[str, object] = {"seed": seed}
    for key, value in pairs.items():
        if key.startswith("lr."):
            continue
        if "." in key:
            over[key] = value
            continue
        if not hasattr(loop, key):
            raise SystemExit(f"setting key {key!r} is neither lr.<prefix> nor a key of neuropictor.refine "
                             f"({', '.join(loop.__dataclass_fields__)})")
        over[f"neuropictor.refine.{key}"] = int(value) if key.endswith("steps") else value
        if key == "steps" and "mask_steps" not in pairs:
            over["neuropictor.refine.mask_steps"] = round(value * loop.mask_steps / loop.steps)
    return load_params(overrides=over)


def summarise(rows: list[dict]) -> list[dict]:
    """Per setting: mean and spread over seeds of alpha 1's metrics and of alpha 1 - alpha 0."""
    out = []
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name]
        seeds = sorted({r["seed"] for r in mine})
        at = {a: np.array([[next(r for r in mine if r["seed"] == s and r["alpha"] == a)[k] for k in KEEP]
                           for s in seeds]) for a in (0.0, 1.0)}
        for label, values in (("alpha 1", at[1.0]), ("alpha 1 - alpha 0", at[1.0] - at[0.0])):
            out.append({"setting": name, "seeds": seeds, "of": label,
                        "mean": dict(zip(KEEP, np.round(values.mean(0), 4).tolist())),
                        "spread": dict(zip(KEEP, np.round(np.ptp(values, 0), 4).tolist()))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=["pipeline"])
    ap.add_argument("--pretrain", action="store_true", help="pretrain each run too (under its setting and seed)")
    ap.add_argument("--out", default="probes/results/refine_seeds.json")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    cfg = load_params()
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    store = FeatureStore(cfg.path("features"))
    z0 = store.latents(ids)
    z0_train = store.latents(prepared.rows(args.subject, "train").nsd_id.to_numpy())
    states = store.states(ids)
    train_maps = torch.as_tensor(np.asarray(prepared.flatmaps(args.subject, "train"), np.float32))
    pre = decoding.load_model(cfg.path("models") / "pretrain", decoding.build_neuropictor(cfg, found, mask, "pretrain"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []  # resume: runs already scored
    base = decoding.lr_scales
    for name, pairs in settings:
        for seed in args.seeds:
            if any(r["setting"] == name and r["seed"] == seed for r in rows):
                continue
            c = setting_params(pairs, seed)
            decoding.lr_scales = with_lr_scales({k[len("lr."):]: v for k, v in pairs.items() if k.startswith("lr.")})
            t0 = time.time()
            start = pretrain(c, world, desc=f"{name} seed {seed} pretrain") if args.pretrain else pre
            model = refine(c, world, start, args.subject, desc=f"{name} seed {seed}")
            minutes = (time.time() - t0) / 60
            decoding.lr_scales = base
            with torch.no_grad():  # how much of the latents E_ft's map F_0^l holds (test; training scans)
                S_r, F_txt, F_sem = model.conditions(torch.as_tensor(maps))
                F0 = model.llmn.feature_map(S_r)
                F0_train = model.llmn.feature_map(model.conditions(train_maps)[0])
            f0_r2 = round(r2_score(F0.flatten(1), z0.flatten(1)), 4)
            f0_r2_train = round(r2_score(F0_train.flatten(1), z0_train.flatten(1)), 4)
            for a in (0.0, 1.0):
                with torch.no_grad():
                    s = score_reconstructions(gt, reconstruct_images(model, found, maps, c, alpha=a), ids, found,
                                              prepared, c.world == "synthetic", networks)
                rows.append({"setting": name, "overrides": pairs, "pretrained here": args.pretrain, "seed": seed,
                             "alpha": a, "minutes": round(minutes, 2), "F_0^l R^2 vs z0": f0_r2,
                             "... on training scans": f0_r2_train,
                             "F~txt R^2 vs caption states": round(r2_score(F_txt, states), 4),
                             "F^sem R^2": round(r2_score(F_sem, states), 4), **{k: round(s[k], 4) for k in KEEP}})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
            out.write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    wanted = {n for n, _ in settings}
    summary = summarise([r for r in rows if r["setting"] in wanted and r["seed"] in args.seeds])
    for s in summary:
        print(json.dumps(s, ensure_ascii=False))
    out.write_text(json.dumps({"subject": args.subject, "rows": rows, "summary": summary}, indent=1,
                              ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
