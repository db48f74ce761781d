"""CLIP-pair learning curve on the foundation's corpus (issue 12's CLIP bars).

Trains the CLIP pair with the foundation's recipe (params.yaml `foundation.clip`), with
optional overrides, and every `--eval-every` steps scores image -> caption top-1 among 100
held-out pairs and the shape pick (own caption among its five shape variants), as the
foundation notebook does. Not part of any pipeline: a probe that sets `clip.steps`.

    .venv/bin/python foundation/probes/clip_steps.py --steps 4000 --eval-every 500
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from neuropictor.config import PROJ_ROOT, load_params
from neuropictor.data.corpus import SceneCorpus, ScenePool, UInt8Batches, shape_variants
from neuropictor.data.stimuli import SHAPES
from neuropictor.models.foundation import CLIPSpec, build_clip, clip_negatives_loss, clip_retrieval, clip_shape_pick
from neuropictor.models.tokenizer import build_tokenizer
from neuropictor.train import TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--scenes", type=int, default=None, help="training scenes (default: foundation.corpus.scenes)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    args = ap.parse_args()
    cfg = load_params(PROJ_ROOT / "params.yaml")
    P = cfg.foundation
    n_scenes = args.scenes or P.corpus.scenes
    corpus = SceneCorpus(P.corpus.seed)
    pool = ScenePool(corpus, n_scenes)
    x_held, caps_held, attrs_held = corpus.held_out(100)
    full_held = [c[0] for c in caps_held]
    tokenizer = build_tokenizer([c for caps in pool.captions[:5000] for c in caps], max_length=P.clip.max_length)

    def token_ids(texts):
        return tokenizer(texts, padding="max_length", truncation=True, max_length=P.clip.max_length,
                         return_tensors="pt").input_ids

    ids = torch.cat([token_ids([c for caps in pool.captions[s:s + 5000] for c in caps])
                     for s in range(0, n_scenes, 5000)]).reshape(n_scenes, 5, -1)
    neg = torch.cat([token_ids([v for _, row in pool.attributes.iloc[s:s + 5000].iterrows() for v in shape_variants(row)])
                     for s in range(0, n_scenes, 5000)]).reshape(n_scenes, len(SHAPES) - 1, -1)
    spec = CLIPSpec(width=P.clip.width, layers=P.clip.layers, heads=P.clip.heads, embed_dim=P.clip.embed_dim,
                    max_length=P.clip.max_length, patch=P.clip.patch)
    torch.manual_seed(cfg.seed + 1)
    clip = build_clip(spec, len(tokenizer), pool.images.shape[-1])

    @torch.no_grad()
    def evaluate(model):
        model.eval()
        out = {"top1": clip_retrieval(model, x_held, token_ids(full_held)),
               "shape_pick": clip_shape_pick(model, x_held, attrs_held, full_held, token_ids)}
        model.train()
        return out

    t0 = time.time()
    steps = args.steps
    hist = fit(clip, clip_negatives_loss(P.clip.full_caption_share), UInt8Batches(pool.images, ids, neg),
               TrainConfig(steps=steps, batch_size=args.batch_size or P.clip.batch_size, lr=args.lr or P.clip.lr,
                           seed=cfg.seed + 1, warmup=min(100, max(1, steps // 10)), log_every=50,
                           eval_every=args.eval_every), None, desc="clip", evaluate=evaluate)
    print(json.dumps({"steps": steps, "scenes": n_scenes, "minutes": round((time.time() - t0) / 60, 1),
                      "curve": [h for h in hist if "top1" in h]}), flush=True)


if __name__ == "__main__":
    main()
