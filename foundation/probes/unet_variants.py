"""Side-by-side text-to-image UNet probes on the shipped foundation (issue 12's diagnosis).

Each variant trains a fresh UNet for `--steps` steps on the VAE latents of the first
`--scenes` corpus scenes, then draws 100 held-out captions (DDIM 25, guidance 5) and the
shipped attribute classifier reads the primary object. Not part of any pipeline: a probe to
rerun when the recipe changes. About 7 min per variant at 1,500 steps on 2 cores.

    .venv/bin/python foundation/probes/unet_variants.py shipped oracle attn16 objw wide imagevae
    python foundation/probes/unet_variants.py shipped shapeword --device cuda --batch-size 256 \
        --lr 2e-3 --scenes 40000 --steps 16000 --eval-every 1000 --log curve.jsonl   # on a GPU

variants: shipped (the shipped recipe), oracle (+ the true shape as a class embedding),
shapeword (the caption is only the primary object's shape word: does the full caption hide
the shape?), pooled (+ the caption's token states attention-pooled into the time embedding,
diffusers' `addition_embed_type="text"`: the caption reaches every block as the oracle's
label does), attn16 (cross-attention at 16 x 16 too), objw (loss x 9 on object pixels),
prefixmix (half the training captions are the full caption cut after the primary
object's name, "a medium red triangle": in the causal text tower that token's state is the one
the full caption has), wide (channels 64, 128, 128), imagevae (a VAE retrained with latent channels 0-2 pulled to
the pooled image), noisyvae (a VAE whose decoder is trained on noisy latents, `--vae-sigma`), blurvae (the
same, half of each batch decoded from 3 x 3 blurred latents), vae8 (SD's downsampling factor 8:
a noisy-latent VAE to 16 x 8 x 8, where an object is one to three latent pixels and its
shape must be a value in channels, not a drawn outline; UNet 64-128-128, attention at every
level).
Each run first prints its VAE's held-out PSNR and the shape the classifier still reads
after the latents are blurred or noised.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from neuropictor.config import PROJ_ROOT, load_params
from neuropictor.data.corpus import SceneCorpus, ScenePool, UInt8Batches, primary_captions
from neuropictor.data.stimuli import SHAPES
from neuropictor.models.foundation import (VAESpec, build_vae, diffusion_target, load_foundation, noise_schedule,
                                           pick_caption)
from neuropictor.models.standins import attribute_metrics, predict_attributes
from neuropictor.train import TensorBatches, TrainConfig, fit

VAE8 = VAESpec(channels=(16, 32, 64, 64), latent_channels=16)  # SD's factor 8: 64 px -> 16 x 8 x 8
VARIANTS = ("shipped", "oracle", "pooled", "shapeword", "prefixmix", "noisyvae", "blurvae", "vae8", "attn16", "objw", "wide", "imagevae")


def noisy_vae(pool, steps: int, sigma: float = 0.2, blur: float = 0.0, spec: VAESpec = VAESpec()):
    """The shipped VAE's recipe, with the decoder trained on noisy latents: mean + sigma x
    (the batch's latent std, no gradient) x N(0, 1), so the encoder cannot outgrow the noise
    by scaling. The decoder must read a code that survives small errors (the kind a UNet's
    last denoising steps leave) instead of sign-alternating outlines. With `blur`, that share
    of the batch is decoded from 3 x 3 box-blurred latents: shape must live in smooth codes.
    Scored decoding the mean."""
    torch.manual_seed(0)
    vae = build_vae(spec, pool.images.shape[-1])

    def loss(vae, batch):
        (x,) = batch
        mean = vae.encode(x).latent_dist.mean
        z = mean + sigma * mean.detach().std() * torch.randn_like(mean)
        if blur:
            smooth = F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)
            z = torch.where((torch.rand(len(z), 1, 1, 1) < blur), smooth, z)
        rec = vae.decode(z).sample
        background = x.flatten(2).median(-1).values[..., None, None]
        w = 1 + 9.0 * ((x - background).abs().sum(1, keepdim=True) > 0.1).float()
        err = (rec - x).abs() + (rec - x) ** 2
        return (w * err).mean() / w.mean() + 1e-6 * mean.pow(2).flatten(1).sum(1).mean()

    fit(vae, loss, UInt8Batches(pool.images, signed=True), TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup=100),
        None, desc=f"noisy VAE (sigma {sigma}, blur {blur})")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def vae_checks(vae, held, classifier) -> dict:
    """Held-out PSNR decoding the mean, and the primary object's shape as the classifier reads
    it after the latents are 3 x 3 blurred or get N(0, 0.3 std) noise: how forgiving the code is."""
    x = held[0].to(vae.device)
    z = vae.encode(2 * x - 1).latent_dist.mean
    out = {}
    for name, zz in (("mean", z), ("blur3", F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)),
                     ("noise0.3", z + 0.3 * z.std() * torch.randn(z.shape, generator=torch.Generator().manual_seed(0)).to(z))):
        rec = ((vae.decode(zz).sample + 1) / 2).clamp(0, 1).cpu()
        out[f"shape_kept_{name}"] = attribute_metrics(predict_attributes(classifier, rec), held[2])["shape accuracy"]
        if name == "mean":
            out["psnr_db"] = float(10 * torch.log10(1 / F.mse_loss(rec, x.cpu())))
    return out


def image_like_vae(pool, steps: int, weight: float = 1.0):
    """The shipped VAE's recipe plus a pull of latent channels 0-2 toward the pooled image."""
    torch.manual_seed(0)
    vae = build_vae(VAESpec(), pool.images.shape[-1])

    def loss(vae, batch):
        (x,) = batch
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean).sample
        background = x.flatten(2).median(-1).values[..., None, None]
        w = 1 + 9.0 * ((x - background).abs().sum(1, keepdim=True) > 0.1).float()
        err = (rec - x).abs() + (rec - x) ** 2
        pooled = F.avg_pool2d(x, x.shape[-1] // post.mean.shape[-1])
        return (w * err).mean() / w.mean() + 1e-6 * post.kl().mean() + weight * F.mse_loss(post.mean[:, :3], pooled)

    fit(vae, loss, UInt8Batches(pool.images, signed=True), TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup=100),
        None, desc="image-like VAE")
    return vae.eval().requires_grad_(False)


def probe(variant: str, steps: int, scenes: int, found, corpus, held, vae_steps: int = 1200,
          eval_every: int | None = None, vae_sigma: float = 0.2, batch_size: int = 32, lr: float = 1e-3,
          device: str = "cpu", log=None, start_after=None) -> dict:
    from diffusers import UNet2DConditionModel

    dev = torch.device(device)
    pipe, classifier = found.pipe, found.standins["attribute_net"]
    te, tok = pipe.text_encoder.to(dev), pipe.tokenizer
    pool = ScenePool(corpus, scenes)
    vae = {"imagevae": lambda: image_like_vae(pool, vae_steps),
           "noisyvae": lambda: noisy_vae(pool, vae_steps, vae_sigma),
           "blurvae": lambda: noisy_vae(pool, vae_steps, vae_sigma, blur=0.5),
           "vae8": lambda: noisy_vae(pool, vae_steps, vae_sigma, spec=VAE8)}.get(variant, lambda: pipe.vae)().to(dev)
    vae_scores = vae_checks(vae, held, classifier)
    print(variant, "VAE:", vae_scores, flush=True)

    def ids_of(texts, on=None):
        return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids.to(on or "cpu")

    with torch.no_grad():
        chunks = [slice(s, s + 2000) for s in range(0, scenes, 2000)]
        z = torch.cat([vae.encode(2 * pool.float_images(c).to(dev) - 1).latent_dist.mean.cpu() for c in chunks])
        scale = float(1 / z.std()) if variant in ("imagevae", "noisyvae", "blurvae", "vae8") else vae.config.scaling_factor
        z = z * scale
        objects = torch.cat([(pool.float_images(c) - pool.float_images(c)[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.05
                             for c in chunks]).float()
        objects = F.adaptive_max_pool2d(objects, z.shape[-1])
        empty = te(input_ids=ids_of([""], dev)).last_hidden_state
    if variant == "shapeword":
        ids = ids_of(list(pool.attributes["shape_0"])).reshape(scenes, 1, -1)
    else:
        ids = ids_of([c for caps in pool.captions for c in caps]).reshape(scenes, 5, -1)
    if variant == "prefixmix":  # half the draws: the full caption cut after the primary object's name
        ids = torch.cat([ids, ids_of(primary_captions(pool.attributes)).reshape(scenes, 1, -1).expand(-1, 5, -1)], 1)
    labels = torch.tensor([SHAPES.index(s) for s in pool.attributes["shape_0"]])

    channels = (64, 128, 128) if variant in ("wide", "vae8") else (32, 64, 128)
    down, up = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), \
        ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    if variant in ("attn16", "vae8"):
        down, up = ("CrossAttnDownBlock2D",) * 3, ("CrossAttnUpBlock2D",) * 3
    extra = {"num_class_embeds": len(SHAPES) + 1} if variant == "oracle" else {}
    if variant == "pooled":  # the caption, attention-pooled, added to the time embedding
        extra = {"addition_embed_type": "text", "addition_embed_type_num_heads": 4}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=z.shape[-1], in_channels=z.shape[1], out_channels=z.shape[1],
                                down_block_types=down, up_block_types=up, block_out_channels=channels,
                                layers_per_block=1, cross_attention_dim=empty.shape[-1], attention_head_dim=4,
                                norm_num_groups=16, **extra)
    sched = noise_schedule("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    object_weight = 9.0 if variant == "objw" else 0.0

    def loss(unet, batch):
        z0, cid, lab, mask = batch
        with torch.no_grad():
            states = te(input_ids=pick_caption(cid)).last_hidden_state
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (len(z0),), device=z0.device)
        drop = torch.rand(len(z0), device=z0.device) < 0.1
        states = torch.where(drop[:, None, None], empty, states)
        cond = {"class_labels": torch.where(drop, len(SHAPES), lab)} if variant == "oracle" else {}
        err = (unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=states, **cond).sample
               - diffusion_target(sched, z0, noise, t)) ** 2
        w = 1 + object_weight * mask
        return ((err * w).flatten(1).mean(1) / w.flatten(1).mean(1)).mean()

    x_held, caps_held, attrs_held = held
    captions = list(attrs_held["shape_0"]) if variant == "shapeword" else [c[0] for c in caps_held]
    held_labels = torch.tensor([SHAPES.index(s) for s in attrs_held["shape_0"]], device=dev)
    evaluated = []

    @torch.no_grad()
    def evaluate(model):
        ddim = noise_schedule("ddim", prediction_type="v_prediction", zero_terminal_snr=True)
        ddim.set_timesteps(25)
        lat = torch.randn(len(captions), *z.shape[1:], generator=torch.Generator().manual_seed(0)).to(dev)
        states = torch.cat([empty.expand(len(captions), -1, -1), te(input_ids=ids_of(captions, dev)).last_hidden_state])
        cond = ({"class_labels": torch.cat([torch.full_like(held_labels, len(SHAPES)), held_labels])}
                if variant == "oracle" else {})
        for t in ddim.timesteps:
            u, c = model(torch.cat([lat, lat]), t, encoder_hidden_states=states, **cond).sample.chunk(2)
            lat = ddim.step(u + 5.0 * (c - u), t, lat).prev_sample
        images = ((vae.decode(lat / scale).sample + 1) / 2).clamp(0, 1).cpu()
        m = attribute_metrics(predict_attributes(classifier, images), attrs_held)
        out = {"shape": m["shape accuracy"], "colour": m["colour accuracy"], "size": m["size accuracy"]}
        evaluated.append(out)
        if log:  # one JSON line per learning-curve point, written as it comes
            with open(log, "a") as f:
                f.write(json.dumps({"variant": variant, "batch_size": batch_size, "lr": lr,
                                    "step": len(evaluated) * (eval_every or max(1, steps // 2)),
                                    "minutes": round((time.time() - t0) / 60, 2), **out}) + "\n")
        return out

    while start_after and not os.path.exists(start_after):  # e.g. until a benchmark sharing the GPU is done
        time.sleep(2)
    t0 = time.time()
    hist = fit(unet, loss, TensorBatches(z, ids, labels, objects),
               TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=100, log_every=100, ema=0.995,
                           eval_every=eval_every or max(1, steps // 2)), None, desc=variant, evaluate=evaluate)
    curve = [h for h in hist if "shape" in h]
    return {"variant": variant, "steps": steps, "scenes": scenes, "minutes": round((time.time() - t0) / 60, 1),
            "vae": vae_scores, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", choices=VARIANTS)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--captions", type=int, default=100)
    ap.add_argument("--vae-steps", type=int, default=1200, help="imagevae: steps of its VAE")
    ap.add_argument("--vae-sigma", type=float, default=0.2, help="noisyvae: relative latent noise")
    ap.add_argument("--eval-every", type=int, default=None, help="learning-curve interval (default: steps / 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu", help="where the UNet trains (accelerate picks cuda when present)")
    ap.add_argument("--foundation", default=None, help="weights folder (default: params.yaml paths.foundation)")
    ap.add_argument("--log", default=None, help="append each learning-curve point to this JSON-lines file")
    ap.add_argument("--start-after", default=None, help="train only once this file exists (data are prepared before)")
    args = ap.parse_args()
    cfg = load_params(PROJ_ROOT / "params.yaml")
    found = load_foundation(args.foundation or cfg.path("foundation"))
    corpus = SceneCorpus(cfg.foundation.corpus.seed)
    held = corpus.held_out(args.captions)
    for variant in args.variants:
        print(json.dumps(probe(variant, args.steps, args.scenes, found, corpus, held, args.vae_steps, args.eval_every,
                               args.vae_sigma, args.batch_size, args.lr, args.device, args.log, args.start_after)),
              flush=True)


if __name__ == "__main__":
    main()
