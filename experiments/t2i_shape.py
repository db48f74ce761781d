"""Why does the synthetic world's text-to-image UNet miss the caption's shape? Six
interventions at the default training budget, side by side in one run.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/t2i_shape.py [--params params.yaml]
        [--variants baseline,sampler,...] [--steps N] [--out experiments/results/t2i_shape.json]

Reads the finished foundation stage (`paths.foundation`: VAE, CLIP pair, attribute
classifier) and the prepared stimuli; retrains only what a variant changes, with the
stage's own sizes, steps, seeds and learning rates (`foundation.*` in params). Every UNet is
scored as stage 02 scores its own: one image per held-out full caption (DDIM, the stage's
steps and guidance), the attribute classifier reads the primary object's shape and colour.

Variants (each changes one thing against `baseline`, the stage's own recipe):
  baseline            a UNet trained exactly as stage 02 trains it (project code)
  sampler             no training: the saved pipeline under other guidance scales / DDIM steps
  negclip             the CLIP pair retrained with shape hard negatives (each image must also
                      reject its caption with the shape word swapped; NegCLIP, Yuksekgonul et
                      al. 2023), then a UNet on that text tower
  joint_text          the text tower fine-tuned together with the UNet (GLIDE-style)
  logit_normal_t      timesteps drawn from 1000 * sigmoid(N(0.3, 1)) (SD3's logit-normal,
                      shifted toward the high noise where the shape is decided)
  full_res_attention  cross-attention at every UNet level, also at the full 16 x 16 latent
  latent_8x8x16       a VAE with one more downsampling: 8 x 8 x 16 latents (same size as
                      16 x 16 x 4), a wider UNet (64, 128, 128) on them
  memorise_64         not a fix but a test of the recipe: the stage's UNet fitted to only 64
                      training images for 3x the steps (~1200 epochs), then asked to draw
                      those same images from their captions (not in the default list: ~10 min)

Writes the JSON after every variant ("complete": false until the last one) and, at the
end, a figure of the first 8 held-out captions drawn by each variant (same path, .png).
Takes ~30 min on 2 CPU cores with the default params. Not a DVC stage: a diagnostic.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from neuropictor.config import load_params  # noqa: E402
from neuropictor.data.prep import Prepared  # noqa: E402
from neuropictor.data.stimuli import SHAPES, Scene, full_caption, scene_of_row  # noqa: E402
from neuropictor.io import save_json  # noqa: E402
from neuropictor.models import foundation as fd  # noqa: E402
from neuropictor.models.standins import attribute_metrics, predict_attributes  # noqa: E402
from neuropictor.train import TensorBatches, TrainConfig, fit  # noqa: E402

VARIANTS = ("baseline", "sampler", "negclip", "joint_text", "logit_normal_t", "full_res_attention", "latent_8x8x16")
EXTRA = ("memorise_64",)


# ------------------------------------------------------------------ setting up
def context(cfg, steps: int | None) -> SimpleNamespace:
    """Stimuli, captions and the foundation stage's models, as stage 02 holds them."""
    if cfg.world != "synthetic":
        sys.exit(f"t2i_shape: needs the synthetic world (its captions name each object's shape); "
                 f"params.world is {cfg.world!r}.")
    prepared = Prepared(cfg.path("prepared"))
    found = fd.load_foundation(cfg.path("foundation"))
    index = prepared.index
    train_ids = np.sort(index[index.split == "train"].nsd_id.unique())
    test_ids = np.sort(index[index.split == "test"].nsd_id.unique())
    captions = prepared.captions()
    tok = found.pipe.tokenizer
    P = cfg.foundation

    def ids(texts):
        return tok(texts, padding="max_length", truncation=True, max_length=P.clip.max_length,
                   return_tensors="pt").input_ids

    def captions_full_first(nsd_ids, attrs):  # (n, 5) captions, the full one in column 0
        rows = []
        for i, (_, row) in zip(nsd_ids, attrs.iterrows()):
            full = full_caption(scene_of_row(row))
            rows.append([full] + [c for c in captions[int(i)] if c != full][:4])
        return rows

    train_attrs, test_attrs = prepared.attributes(train_ids), prepared.attributes(test_ids)
    train_caps = captions_full_first(train_ids, train_attrs)
    x_train = fd.images_of(prepared, train_ids)
    vae = found.pipe.vae
    z_train = fd.image_latents(vae, x_train)  # the saved scaling_factor: the stage's unit-variance latents
    return SimpleNamespace(
        cfg=cfg, P=P, found=found, tok=tok, ids=ids, vae=vae, x_train=x_train, z_train=z_train,
        x_test=fd.images_of(prepared, test_ids), test_attrs=test_attrs, train_attrs=train_attrs,
        train_full=[caps[0] for caps in train_caps],
        ids_train=ids([c for caps in train_caps for c in caps]).reshape(len(train_ids), len(train_caps[0]), -1),
        test_full=[caps[0] for caps in captions_full_first(test_ids, test_attrs)],
        unet_steps=steps or cfg.steps(P.unet.steps), seed=cfg.seed)


def train_cfg(ctx, p, seed_offset: int, steps: int | None = None) -> TrainConfig:
    """Stage 02's TrainConfig for one of its models (`p` = its params section)."""
    n = steps if steps is not None else ctx.cfg.steps(p.steps)
    return TrainConfig(steps=n, batch_size=p.batch_size, lr=p.lr, seed=ctx.seed + seed_offset,
                       warmup=min(50, n // 10), log_every=50)


def schedules(ctx):
    kw = dict(prediction_type=ctx.P.unet.prediction, zero_terminal_snr=ctx.P.unet.zero_terminal_snr)
    return fd.noise_schedule("ddpm", **kw), fd.noise_schedule("ddim", **kw)


def empty_states(ctx, text_encoder) -> torch.Tensor:
    with torch.no_grad():
        return text_encoder(input_ids=ctx.ids([""])).last_hidden_state


def stage_unet(ctx, latents: torch.Tensor, channels=None):
    torch.manual_seed(ctx.seed)
    spec = fd.UNetSpec(channels=tuple(channels or ctx.P.unet.channels), heads=ctx.P.unet.heads,
                       empty_caption_rate=ctx.P.unet.empty_caption_rate)
    return fd.build_unet(spec, latents.shape[-1], latents.shape[1], ctx.P.clip.width)


# ------------------------------------------------------------------ scoring
@torch.no_grad()
def draw(ctx, vae, text_encoder, unet, guidance=None, steps=None, captions=None) -> torch.Tensor:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=ctx.tok, unet=unet.eval(),
                                   scheduler=schedules(ctx)[1], safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe(ctx.test_full if captions is None else captions, num_inference_steps=steps or ctx.P.sample_steps,
                guidance_scale=ctx.P.guidance if guidance is None else guidance,
                generator=torch.Generator().manual_seed(ctx.seed), output_type="pt").images.float().clamp(0, 1)


def score(ctx, images: torch.Tensor, attrs=None) -> dict:
    """Shape, colour and both of the primary object, read by the attribute classifier, against
    the held-out stimuli's attributes (or `attrs`)."""
    attrs = ctx.test_attrs if attrs is None else attrs
    pred = predict_attributes(ctx.found.standins["attribute_net"], images)
    m = attribute_metrics(pred, attrs)
    both = (pred["shape"].to_numpy() == attrs["shape_0"].to_numpy()) & \
           (pred["colour"].to_numpy() == attrs["colour_0"].to_numpy())
    return {"shape": m["shape accuracy"], "colour": m["colour accuracy"], "shape_and_colour": float(both.mean())}


def text_probes(ctx, clip, text_encoder) -> dict:
    """Stage 02's two text-side probes: state spread of the shape word, CLIP shape pick."""
    probe = [f"a large red {s} in the center on a dark background" for s in SHAPES]
    scenes = [scene_of_row(row) for _, row in ctx.test_attrs.iterrows()]
    img = fd.clip_embed_images(clip, ctx.x_test)
    sims = torch.stack([(img * fd.clip_embed_text(clip, ctx.ids([
        full_caption(Scene(sc.background, [dict(sc.objects[0], shape=s)] + sc.objects[1:])) for sc in scenes])))
        .sum(1) for s in SHAPES], 1)
    truth = np.array([SHAPES.index(sc.objects[0]["shape"]) for sc in scenes])
    return {"shape_state_spread": fd.state_spread(text_encoder, ctx.tok, probe),
            "clip_shape_pick": float((sims.argmax(1).numpy() == truth).mean())}


# ------------------------------------------------------------------ the variants' training changes
def variant_loss(ctx, text_encoder, t_sampler=None, train_text: bool = False):
    """fd.diffusion_loss with two knobs: how timesteps are drawn, and whether the text tower
    is trained through the loss (then the empty caption is dropped in as ids, not states)."""
    sched = schedules(ctx)[0]
    empty_ids = ctx.ids([""])
    rate = ctx.P.unet.empty_caption_rate
    n_t = sched.config.num_train_timesteps

    def loss(model, batch):
        z0, ids = batch
        ids = fd.pick_caption(ids)
        drop = torch.rand(len(ids)) < rate
        ids = torch.where(drop[:, None], empty_ids, ids)
        with torch.set_grad_enabled(train_text):
            states = model.text(input_ids=ids).last_hidden_state
        noise = torch.randn_like(z0)
        t = t_sampler(len(z0)) if t_sampler is not None else torch.randint(0, n_t, (len(z0),))
        pred = model.unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=states).sample
        return F.mse_loss(pred, fd.diffusion_target(sched, z0, noise, t))
    return loss


class UNetWithText(nn.Module):
    def __init__(self, unet, text_encoder, train_text: bool):
        super().__init__()
        self.unet = unet
        self.text = text_encoder.requires_grad_(train_text).train(train_text)


def train_variant(ctx, unet, text_encoder, latents=None, t_sampler=None, train_text=False):
    model = UNetWithText(unet, text_encoder, train_text)
    fit(model, variant_loss(ctx, text_encoder, t_sampler, train_text),
        TensorBatches(ctx.z_train if latents is None else latents, ctx.ids_train),
        train_cfg(ctx, ctx.P.unet, 2, ctx.unet_steps), desc="unet")
    return model.unet, model.text


def swap_words(ids: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Each token of `ids` that is one of `words` becomes another of them, at random."""
    match = ids[..., None] == words
    shift = torch.randint(1, len(words), ids.shape)
    return torch.where(match.any(-1), words[(match.float().argmax(-1) + shift) % len(words)], ids)


def negclip_loss(words: torch.Tensor, first_share: float):
    def loss(clip, batch):
        images, ids = batch
        ids = fd.pick_caption(ids, first_share)
        out = clip(input_ids=torch.cat([ids, swap_words(ids, words)]), pixel_values=fd.clip_pixels(images))
        img, txt = F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.T  # (n, 2n): own captions, then the swapped ones
        target = torch.arange(len(ids))
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :len(ids)].T, target))
    return loss


# ------------------------------------------------------------------ the variants
def train_stage_recipe(ctx, z: torch.Tensor, ids: torch.Tensor, steps: int):
    """A UNet trained on (latents, caption ids) exactly as stage 02 trains its own (project
    code: foundation.diffusion_loss on the saved text tower), for `steps` steps."""
    te = ctx.found.pipe.text_encoder
    unet = stage_unet(ctx, z)
    fit(unet, fd.diffusion_loss(schedules(ctx)[0], empty_states(ctx, te), ctx.P.unet.empty_caption_rate, te,
                                ctx.P.unet.snr_gamma),
        TensorBatches(z, ids), train_cfg(ctx, ctx.P.unet, 2, steps), desc="unet")
    return unet


def v_baseline(ctx):
    unet = train_stage_recipe(ctx, ctx.z_train, ctx.ids_train, ctx.unet_steps)
    images = draw(ctx, ctx.vae, ctx.found.pipe.text_encoder, unet)
    return score(ctx, images), images


def v_sampler(ctx):
    pipe = ctx.found.pipe
    grid = {}
    for guidance, steps in ((1.0, None), (2.0, None), (8.0, None), (None, 4 * ctx.P.sample_steps)):
        g = ctx.P.guidance if guidance is None else guidance
        n = steps or ctx.P.sample_steps
        grid[f"guidance {g:g}, {n} steps"] = score(ctx, draw(ctx, pipe.vae, pipe.text_encoder, pipe.unet, g, n))
    images = draw(ctx, pipe.vae, pipe.text_encoder, pipe.unet)
    return dict(score(ctx, images), grid=grid), images


def v_negclip(ctx):
    P = ctx.P
    words = torch.tensor([ctx.tok(w).input_ids[1:-1] for w in SHAPES]).flatten()
    if len(words) != len(SHAPES):
        raise RuntimeError("each shape word must be one token of the tokenizer")
    torch.manual_seed(ctx.seed)
    clip = fd.build_clip(fd.CLIPSpec(width=P.clip.width, layers=P.clip.layers, heads=P.clip.heads,
                                     embed_dim=P.clip.embed_dim, max_length=P.clip.max_length, patch=P.clip.patch),
                         len(ctx.tok), ctx.x_train.shape[-1])
    fit(clip, negclip_loss(words, P.clip.full_caption_share), TensorBatches(ctx.x_train, ctx.ids_train),
        train_cfg(ctx, P.clip, 1), desc="clip")
    te = fd.text_encoder_of(clip).requires_grad_(False)
    probes = dict(text_probes(ctx, clip, te), clip_top1_retrieval=fd.clip_retrieval(clip, ctx.x_test, ctx.ids(ctx.test_full)))
    unet, te = train_variant(ctx, stage_unet(ctx, ctx.z_train), te)
    images = draw(ctx, ctx.vae, te, unet)
    return dict(score(ctx, images), **probes), images


def v_joint_text(ctx):
    te = copy.deepcopy(ctx.found.pipe.text_encoder)
    unet, te = train_variant(ctx, stage_unet(ctx, ctx.z_train), te, train_text=True)
    images = draw(ctx, ctx.vae, te, unet)
    return dict(score(ctx, images), shape_state_spread=text_probes(ctx, ctx.found.clip, te)["shape_state_spread"]), images


def v_logit_normal_t(ctx):
    n_t = schedules(ctx)[0].config.num_train_timesteps

    def draw_t(n):
        return (torch.sigmoid(0.3 + torch.randn(n)) * n_t).long().clamp(0, n_t - 1)
    unet, te = train_variant(ctx, stage_unet(ctx, ctx.z_train), ctx.found.pipe.text_encoder, t_sampler=draw_t)
    images = draw(ctx, ctx.vae, te, unet)
    return score(ctx, images), images


def v_full_res_attention(ctx):
    from diffusers import UNet2DConditionModel

    P = ctx.P.unet
    torch.manual_seed(ctx.seed)
    n = len(P.channels)
    unet = UNet2DConditionModel(
        sample_size=ctx.z_train.shape[-1], in_channels=ctx.z_train.shape[1], out_channels=ctx.z_train.shape[1],
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=tuple(P.channels), layers_per_block=1, cross_attention_dim=ctx.P.clip.width,
        attention_head_dim=P.heads, norm_num_groups=min(32, P.channels[0] // 2))
    unet, te = train_variant(ctx, unet, ctx.found.pipe.text_encoder)
    images = draw(ctx, ctx.vae, te, unet)
    return score(ctx, images), images


def v_latent_8x8x16(ctx):
    from neuropictor.metrics import ssim

    P = ctx.P.vae
    spec = fd.VAESpec(channels=(*P.channels, P.channels[-1]), latent_channels=16, norm_groups=P.norm_groups,
                      object_weight=P.object_weight)
    torch.manual_seed(ctx.seed)
    vae, _ = fd.train_vae(2 * ctx.x_train - 1, spec, train_cfg(ctx, P, 0))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        rec = ((vae.decode(vae.encode(2 * ctx.x_test - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)
    mse = ((rec - ctx.x_test) ** 2).flatten(1).mean(1)
    vae_side = {"vae_psnr_db": float((10 * torch.log10(1 / mse)).mean()), "vae_ssim": ssim(ctx.x_test, rec),
                "vae_shape_kept": score(ctx, rec)["shape"]}
    z, scale = fd.unit_latents(vae, ctx.x_train)
    vae.register_to_config(scaling_factor=scale)
    unet, te = train_variant(ctx, stage_unet(ctx, z, channels=(64, 128, 128)), ctx.found.pipe.text_encoder, latents=z)
    images = draw(ctx, vae, te, unet)
    return dict(score(ctx, images), **vae_side), images


def v_memorise_64(ctx, n: int = 64):
    steps = 3 * ctx.unet_steps
    unet = train_stage_recipe(ctx, ctx.z_train[:n], ctx.ids_train[:n], steps)
    images = draw(ctx, ctx.vae, ctx.found.pipe.text_encoder, unet, captions=ctx.train_full[:n])
    result = score(ctx, images, ctx.train_attrs.iloc[:n].reset_index(drop=True))
    return dict(result, n_images=len(images), unet_steps=steps), images, ctx.x_train[:n]


# ------------------------------------------------------------------ main
def figure(drawn: dict, path: Path, n: int = 8) -> None:
    """drawn: variant -> (its images, the stimuli its captions describe); a row of stimuli
    precedes each run of variants that drew the same captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, last = [], None
    for name, (images, stimuli) in drawn.items():
        if stimuli is not last:
            rows.append(("stimulus", stimuli))
            last = stimuli
        rows.append((name, images))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.6, 1.25 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i in range(n):
            axes[r, i].imshow(images[i].permute(1, 2, 0).numpy())
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(name.replace("_", "\n", 1), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Captions drawn by each variant (a 'stimulus' row: the images those captions describe)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list of {', '.join(VARIANTS + EXTRA)} (default: all but {', '.join(EXTRA)})")
    ap.add_argument("--steps", type=int, default=None, help="UNet steps (default: foundation.unet.steps)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "t2i_shape.json"))
    args = ap.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS + EXTRA]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS + EXTRA)}")
    t0 = time.time()
    ctx = context(load_params(args.params), args.steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"params": str(args.params), "unet_steps": ctx.unet_steps, "n_test_captions": len(ctx.test_full),
              "complete": False, "variants": {}}
    drawn = {}
    for name in names:
        t = time.time()
        print(f"--- {name}", flush=True)
        result, images, *stimuli = globals()[f"v_{name}"](ctx)
        drawn[name] = (images, stimuli[0] if stimuli else ctx.x_test)
        record["variants"][name] = dict(result, minutes=round((time.time() - t) / 60, 2))
        print(json.dumps({name: record["variants"][name]}), flush=True)
        save_json(out, record)
    figure(drawn, out.with_suffix(".png"))
    record.update(complete=True, minutes=round((time.time() - t0) / 60, 2))
    save_json(out, record)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
