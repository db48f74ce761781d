# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The synthetic foundation: pretrained once, shipped with the repository
#
# NeuroPictor does not train Stable Diffusion: it takes SD-2.1 (and the CLIP and metric
# networks) as given. In the synthetic world this notebook plays the role of the labs that
# trained those: it trains, **once**, on a procedural corpus of its own (the role LAION
# plays), and the weights are committed under `foundation/weights/` with a manifest of
# hashes, settings, steps, wall time and quality metrics. `make repro` only loads them.
#
# | model | format | role |
# |---|---|---|
# | VAE | diffusers `AutoencoderKL` (64 px -> 4 x 16 x 16) | SD's VAE |
# | CLIP pair | transformers `CLIPModel` + offline `CLIPTokenizer`, 6-layer towers | OpenCLIP ViT-H/14 (text) and CLIP ViT (image, layer-wise) |
# | text-to-image UNet | diffusers `UNet2DConditionModel` in a Stable-Diffusion folder | SD-2.1's UNet |
# | hierarchical VAE | `models.hvae` (VDVAE-style, 31 latent groups) | VDVAE (GRU decoder, Brain-Diffuser) |
# | metric stand-ins | `AttributeNet`s | AlexNet, Inception, EffNet-B; the attribute classifier |
#
# **Corpus.** Scene `i` is a pure function of `(foundation.corpus.seed, i)`: the world's
# stimulus generator under another seed. Training uses scenes `0 .. scenes - 1`; the quality
# checks use the top of the index range, which no training batch reaches. The simulated
# brains and the NSD-like world's stimuli are never read.
#
# **Resumable.** Every model trains through `train.fit` with its checkpoint under
# `foundation.checkpoints/<model>-<hash of its settings>/` (outside DVC's outputs, so a
# killed `make foundation` continues where it stopped; changed settings start a new folder).
#
# Reads: nothing but params. Writes: `foundation/weights/` (shipped), `foundation/metrics.json`,
# `foundation/plots/` (learning curves, DVC plots), `foundation/figures/`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from neuropictor.config import PROJ_ROOT, as_dict, notebook_setup
from neuropictor.io import save_json
from neuropictor.report import save_figure
from neuropictor.train import TensorBatches, TrainConfig, fit
from neuropictor.train import checkpoint_dir as train_checkpoint_dir

cfg, _ = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "foundation", show=("seed", "smoke", "foundation"))
P = cfg.foundation
T0 = time.time()
CKPT = Path(P.checkpoints) if Path(P.checkpoints).is_absolute() else PROJ_ROOT / P.checkpoints
OUT = cfg.path("foundation").parent  # foundation/: weights/ (shipped), metrics.json, plots/, figures/
PLOTS, FIG = OUT / "plots", OUT / "figures"
for folder in (PLOTS, FIG):
    folder.mkdir(parents=True, exist_ok=True)
n_scenes = P.corpus.smoke_scenes if cfg.smoke else P.corpus.scenes
n_held = min(P.corpus.held_out, 32) if cfg.smoke else P.corpus.held_out
torch.set_num_threads(max(1, torch.get_num_threads()))
results, timings = {}, {}


def train_cfg(p, seed_offset, **extra):
    steps = cfg.steps(p.steps)
    return TrainConfig(steps=steps, batch_size=p.batch_size, lr=p.lr, seed=cfg.seed + seed_offset,
                       warmup=min(100, max(1, steps // 10)), log_every=max(1, min(50, steps)),
                       ckpt_every=max(1, min(500, steps)), **extra)


def checkpoint_dir(name, *settings):
    """Checkpoint folder keyed by everything that shapes this model (and the corpus), so a
    settings change never resumes an old run."""
    return train_checkpoint_dir(CKPT, name, P.corpus, n_scenes, cfg.seed, cfg.smoke, *settings)


def timed(name):
    timings[name] = round((time.time() - T_STAGE) / 60, 2)
    print(f"{name}: {timings[name]} min")


training_minutes, fit_minutes_here = {}, []


def timed_fit(*args, **kwargs):
    """`fit`, with its wall time in this run noted (the rest of the run is the corpus, latents
    and checks, which a from-scratch run repeats)."""
    t = time.time()
    out = fit(*args, **kwargs)
    fit_minutes_here.append((time.time() - t) / 60)
    return out


def curve(history, name):
    """Loss (and evaluation) history -> a CSV under foundation/plots/ (a DVC plot); notes the
    model's training wall time summed over every resumed part (None for a checkpoint written
    before `fit` logged it)."""
    pd.DataFrame(history).to_csv(PLOTS / f"{name}.csv", index=False)
    logged = [h for h in history if "loss" in h]
    if logged:  # a training history (not a learning curve's evaluations)
        training_minutes[name] = round(logged[-1]["seconds"] / 60, 4) if all("seconds" in h for h in logged) else None

# %% [markdown]
# ## 1 · The corpus
# `n_scenes` scenes are rendered once (about 1.8 ms each) and kept as uint8. The tokenizer is
# built from the training captions; every word the caption grammar can produce must be one
# token.

# %%
from neuropictor.data.corpus import SceneCorpus, ScenePool, UInt8Batches, primary_captions, shape_variants
from neuropictor.data.stimuli import BACKGROUNDS, COLOURS, SHAPES, SIZES
from neuropictor.models.tokenizer import build_tokenizer

T_STAGE = time.time()
corpus = SceneCorpus(P.corpus.seed)
pool = ScenePool(corpus, n_scenes)
x_held, caps_held, attrs_held = corpus.held_out(n_held)
full_held = [c[0] for c in caps_held]
tokenizer = build_tokenizer([c for caps in pool.captions[:5000] for c in caps], max_length=P.clip.max_length)
for word in (*SHAPES, *COLOURS, *SIZES, *BACKGROUNDS):
    assert len(tokenizer.tokenize(word)) == 1, f"'{word}' is not one token"


def token_ids(texts):
    return tokenizer(texts, padding="max_length", truncation=True, max_length=P.clip.max_length,
                     return_tensors="pt").input_ids


ids_pool = torch.cat([token_ids([c for caps in pool.captions[s:s + 5000] for c in caps])
                      for s in range(0, n_scenes, 5000)]).reshape(n_scenes, 5, -1)
neg_pool = torch.cat([token_ids([v for _, row in pool.attributes.iloc[s:s + 5000].iterrows() for v in shape_variants(row)])
                      for s in range(0, n_scenes, 5000)]).reshape(n_scenes, len(SHAPES) - 1, -1)
timed("corpus")
print(f"{n_scenes} training scenes, {n_held} held out, vocabulary {len(tokenizer)}")

# %% [markdown]
# ## 2 · Metric stand-ins and the attribute classifier
# Trained first: the classifier reads every text-to-image check (and later, every
# reconstruction), so it must be trustworthy before anything is judged by it.

# %%
from neuropictor.models.standins import (AttributeNet, attribute_loss, attribute_metrics, attribute_targets,
                                         predict_attributes)

T_STAGE = time.time()
targets = attribute_targets(pool.attributes)
standins = {}
for name, width, offset in (("attribute_net", P.standins.width, 3), ("second_net", P.standins.second_width, 4)):
    torch.manual_seed(cfg.seed + offset)
    net = AttributeNet(width)
    hist = timed_fit(net, attribute_loss, UInt8Batches(pool.images, targets), train_cfg(P.standins, offset),
                     checkpoint_dir(name, P.standins, width), desc=name)
    curve(hist, name)
    standins[name] = net.eval()
classifier = standins["attribute_net"]
results["attribute_classifier"] = attribute_metrics(predict_attributes(classifier, x_held), attrs_held)
timed("standins")
print("attribute classifier on held-out scenes:", results["attribute_classifier"])

# %% [markdown]
# ## 3 · VAE
# `AutoencoderKL` on the posterior mean, L1 + MSE with object pixels up-weighted.

# %%
from neuropictor.metrics import ssim
from neuropictor.models.foundation import VAESpec, build_vae, image_latents, vae_loss

T_STAGE = time.time()
vae_spec = VAESpec(channels=P.vae.channels, latent_channels=P.vae.latent_channels, norm_groups=P.vae.norm_groups,
                   object_weight=P.vae.object_weight)
torch.manual_seed(cfg.seed)
vae = build_vae(vae_spec, pool.images.shape[-1])
hist = timed_fit(vae, vae_loss(vae_spec.object_weight), UInt8Batches(pool.images, signed=True), train_cfg(P.vae, 0),
                 checkpoint_dir("vae", P.vae), desc="vae")
curve(hist, "vae")
vae.eval().requires_grad_(False)


def vae_round_trip(x):
    with torch.no_grad():
        return ((vae.decode(vae.encode(2 * x - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)


def psnr(x, y):
    return float((10 * torch.log10(1 / ((x - y) ** 2).flatten(1).mean(1))).mean())


rec_held = vae_round_trip(x_held)
results["vae"] = {"psnr_db": psnr(x_held, rec_held), "ssim": ssim(x_held, rec_held)}
timed("vae")
print(results["vae"])

# %% [markdown]
# ### The VAE on images from outside the world
# scikit-image's sample photographs (shipped with the package), resized to 64 px: what the
# VAE does to a user's own stimuli. It has never seen a photograph; expect it to keep the
# layout and colours and to lose texture.

# %%
import skimage.data
from skimage.transform import resize

photo_names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "camera", "coins"]
photos = []
for name in photo_names:
    im = getattr(skimage.data, name)()
    im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
    side = min(im.shape[:2])
    im = im[(im.shape[0] - side) // 2:(im.shape[0] + side) // 2, (im.shape[1] - side) // 2:(im.shape[1] + side) // 2]
    photos.append(resize(im, (64, 64), anti_aliasing=True))
photos = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float()
rec_photos = vae_round_trip(photos)
results["vae"]["photographs"] = {"psnr_db": psnr(photos, rec_photos), "ssim": ssim(photos, rec_photos),
                                 "images": photo_names}
print(results["vae"]["photographs"])

fig, axes = plt.subplots(4, 8, figsize=(11, 6))
for i in range(8):
    for row, imgs in enumerate((x_held, rec_held, photos, rec_photos)):
        axes[row, i].imshow(imgs[i].permute(1, 2, 0).numpy())
        axes[row, i].set_axis_off()
for row, label in enumerate(["held-out scene", "VAE", "photograph", "VAE"]):
    axes[row, 0].set_title(label, fontsize=8, loc="left")
fig.suptitle(f"VAE round trip. Scenes: {results['vae']['psnr_db']:.1f} dB, SSIM {results['vae']['ssim']:.3f}; "
             f"photographs: {results['vae']['photographs']['psnr_db']:.1f} dB, "
             f"SSIM {results['vae']['photographs']['ssim']:.3f}", fontsize=9)
save_figure(fig, FIG / "vae_reconstructions.png")

# %% [markdown]
# ## 4 · CLIP pair
# Six-layer text and image towers, contrastive on image-caption pairs. With
# `clip.shape_negatives`, each image also meets its full caption with another primary shape
# (NegCLIP-style hard negatives): the towers must tell shapes apart, not only scenes.

# %%
from neuropictor.models.foundation import (CLIPSpec, build_clip, clip_loss, clip_negatives_loss, clip_retrieval,
                                           clip_shape_pick)

T_STAGE = time.time()
clip_spec = CLIPSpec(width=P.clip.width, layers=P.clip.layers, heads=P.clip.heads, embed_dim=P.clip.embed_dim,
                     max_length=P.clip.max_length, patch=P.clip.patch)
torch.manual_seed(cfg.seed + 1)
clip = build_clip(clip_spec, len(tokenizer), pool.images.shape[-1])
if P.clip.shape_negatives:
    clip_data, clip_objective = UInt8Batches(pool.images, ids_pool, neg_pool), clip_negatives_loss(P.clip.full_caption_share)
else:
    clip_data, clip_objective = UInt8Batches(pool.images, ids_pool), clip_loss(P.clip.full_caption_share)
hist = timed_fit(clip, clip_objective, clip_data, train_cfg(P.clip, 1), checkpoint_dir("clip", P.clip, len(tokenizer)),
                 desc="clip")
curve(hist, "clip")
clip.eval().requires_grad_(False)
n_ret = min(100, n_held)
retrieval = clip_retrieval(clip, x_held[:n_ret], token_ids(full_held[:n_ret]))
shape_pick = clip_shape_pick(clip, x_held[:n_ret], attrs_held.iloc[:n_ret], full_held[:n_ret], token_ids)
results["clip"] = {"top1_retrieval": retrieval, "among": n_ret, "shape_pick": shape_pick,
                   "shape_pick_chance": 1 / len(SHAPES)}
timed("clip")
print(results["clip"])

# %% [markdown]
# ## 5 · Text-to-image UNet
# On the VAE latents of the corpus (scaled to unit variance), conditioned on the frozen text
# tower's final-layer token states of one of each scene's five captions or, a
# `unet.primary_caption_share` of the time, of the full caption cut after the primary
# object's name ("a medium red triangle": the text tower is causal, so its last state is the
# one the full caption has there; it tells the UNet which shape is the primary's); 10 % empty
# captions for classifier-free guidance; v-prediction on a zero-terminal-SNR schedule; an EMA of the
# weights is what ships. Every `unet.eval_every` steps the EMA UNet draws held-out captions
# and the classifier reads them: the learning curve that sets the step count.

# %%
from diffusers import StableDiffusionPipeline

from neuropictor.models.foundation import (UNetSpec, build_unet, diffusion_loss, noise_schedule, text_encoder_of,
                                           text_to_image_check)

T_STAGE = time.time()
z_pool = image_latents(vae, pool.float_images(slice(0, min(n_scenes, 4000))), scale=1.0)
scale = float(1.0 / z_pool.std())
z_pool = torch.cat([image_latents(vae, pool.float_images(slice(s, s + 4000)), scale=scale)
                    for s in range(0, n_scenes, 4000)])
text_encoder = text_encoder_of(clip).requires_grad_(False)
with torch.no_grad():
    empty_states = text_encoder(input_ids=token_ids([""])).last_hidden_state
schedule = dict(prediction_type=P.unet.prediction, zero_terminal_snr=P.unet.zero_terminal_snr)
unet_spec = UNetSpec(channels=P.unet.channels, heads=P.unet.heads, empty_caption_rate=P.unet.empty_caption_rate)
torch.manual_seed(cfg.seed + 2)
unet = build_unet(unet_spec, z_pool.shape[-1], z_pool.shape[1], P.clip.width)
print(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, latents {tuple(z_pool.shape[1:])}, "
      f"VAE scale {scale:.3f}")
vae.register_to_config(scaling_factor=scale)


def sd_pipeline(unet):
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=noise_schedule("ddim", **schedule), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


n_curve = min(P.unet.eval_captions, n_held)


def learning_curve_point(model):
    scores, _, _ = text_to_image_check(sd_pipeline(model), full_held[:n_curve], attrs_held.iloc[:n_curve],
                                       classifier, P.sample_steps, P.guidance, cfg.seed)
    return scores


unet_ids, first_share = ids_pool, None
if P.unet.primary_caption_share:  # caption 0: the full caption cut after the primary object's name
    primary = torch.cat([token_ids(primary_captions(pool.attributes.iloc[s:s + 5000]))
                         for s in range(0, n_scenes, 5000)])
    unet_ids, first_share = torch.cat([primary[:, None], ids_pool], 1), P.unet.primary_caption_share
unet_cfg = train_cfg(P.unet, 2, ema=P.unet.ema, eval_every=0 if cfg.smoke else P.unet.eval_every)
hist = timed_fit(unet, diffusion_loss(noise_schedule("ddpm", **schedule), empty_states, P.unet.empty_caption_rate,
                                      text_encoder, P.unet.snr_gamma, first_share),
                 TensorBatches(z_pool, unet_ids), unet_cfg, checkpoint_dir("unet", P.unet, P.clip, P.vae, len(tokenizer)),
                 desc="unet", evaluate=learning_curve_point)
curve([h for h in hist if "loss" in h], "unet")
curve([h for h in hist if "shape" in h], "unet_text_to_image")
unet.eval().requires_grad_(False)
timed("unet")

# %% [markdown]
# ## 6 · Hierarchical VAE (VDVAE-style)
# 31 latent groups top-down (1x1: 2, 4x4: 4, 8x8: 8, 16x16: 17); trained on the negative ELBO.
# Decoding from the first k groups (the rest from the prior's mean) is what the GRU decoder
# and the Brain-Diffuser-style baseline do with their decoded latents.

# %%
from neuropictor.models.hvae import HierarchicalVAE, HVAESpec, hvae_loss

T_STAGE = time.time()
H = P.hvae
hvae_spec = HVAESpec(image_size=pool.images.shape[-1], resolutions=H.resolutions, groups=H.groups, width=H.width,
                     pixel_width=H.pixel_width, z_dim=H.z_dim, sigma=H.sigma)
torch.manual_seed(cfg.seed + 5)
hvae = HierarchicalVAE(hvae_spec)
hist = timed_fit(hvae, hvae_loss, UInt8Batches(pool.images, signed=True), train_cfg(H, 5), checkpoint_dir("hvae", H),
                 desc="hvae")
curve(hist, "hvae")
hvae.eval().requires_grad_(False)
with torch.no_grad():
    zs = hvae.encode(2 * x_held - 1)
    by_groups = {}
    for k in sorted({1, 2, 6, 14, 15, 20, 25, hvae_spec.n_groups} & set(range(1, hvae_spec.n_groups + 1))):
        by_groups[k] = psnr(x_held, ((hvae.decode(zs[:k]) + 1) / 2).clamp(0, 1))
results["hvae"] = {"psnr_db_all_groups": by_groups[hvae_spec.n_groups], "psnr_db_by_groups": by_groups,
                   "groups": hvae_spec.n_groups}
timed("hvae")
print(results["hvae"])

fig, ax = plt.subplots(figsize=(4.8, 3.2))
ax.plot(list(by_groups), list(by_groups.values()), "o-")
for k in (15, 31):
    if k in by_groups:
        ax.annotate(f"{by_groups[k]:.1f} dB", (k, by_groups[k]), textcoords="offset points", xytext=(4, -12), fontsize=8)
ax.set(xlabel="latent groups given (the rest from the prior's mean)", ylabel="PSNR on held-out scenes (dB)",
       title="Hierarchical VAE: how much the first k groups carry")
save_figure(fig, FIG / "hvae_groups.png")

# %% [markdown]
# ## 7 · Text-to-image on held-out captions
# Every held-out scene's full caption is drawn once (DDIM, classifier-free guidance) and the
# classifier reads the primary object.

# %%
T_STAGE = time.time()
pipe = sd_pipeline(unet)
t2i, drawn, read = text_to_image_check(pipe, full_held, attrs_held, classifier, P.sample_steps, P.guidance, cfg.seed)
results["text_to_image"] = dict(t2i, captions=len(full_held))
timed("text_to_image")
print(results["text_to_image"])

import textwrap

n_show = 10
fig, axes = plt.subplots(2, n_show, figsize=(1.9 * n_show, 4.6))
for i in range(n_show):
    axes[0, i].imshow(x_held[i].permute(1, 2, 0).numpy())
    axes[1, i].imshow(drawn[i].permute(1, 2, 0).numpy())
    axes[0, i].set_title(textwrap.fill(full_held[i].split(" and ")[0], 22), fontsize=6)
    axes[1, i].set_title(f"read: {read['size'][i]} {read['colour'][i]} {read['shape'][i]}", fontsize=6)
    for a in axes[:, i]:
        a.set_axis_off()
fig.suptitle(f"Held-out caption -> image (top: the scene it describes). Shape {t2i['shape']:.0%}, "
             f"colour {t2i['colour']:.0%}, size {t2i['size']:.0%}")
save_figure(fig, FIG / "text_to_image.png")

# %% [markdown]
# ## 8 · Save: the shipped folder and its manifest
# A Stable-Diffusion-style diffusers folder, the CLIP pair with its tokenizer, the
# hierarchical VAE and the stand-ins, written to a temporary folder; the manifest (sha256 of
# every file, the settings, steps, minutes and the quality metrics) is written last and the
# folder renamed into place.

# %%
from neuropictor.io import atomic_dir
from neuropictor.models.foundation import MANIFEST, file_hashes, save_pipeline, save_standins
from neuropictor.models.hvae import save_hvae

root = cfg.path("foundation")
results["minutes"] = round((time.time() - T0) / 60, 2)
with atomic_dir(root) as tmp:
    save_pipeline(tmp / "pipeline", vae, text_encoder, tokenizer, unet, scale, noise_schedule("ddim", **schedule))
    clip.save_pretrained(str(tmp / "clip"), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp / "clip"))
    save_hvae(tmp / "hvae", hvae)
    save_standins(tmp / "standins", standins)
    manifest = {"files": file_hashes(tmp), "params": as_dict(cfg)["foundation"], "seed": cfg.seed,
                "smoke": cfg.smoke, "corpus_scenes": n_scenes, "held_out_scenes": n_held,
                "steps": {k: cfg.steps(getattr(P, k).steps) for k in ("vae", "clip", "unet", "hvae", "standins")},
                "minutes": timings, "quality": results}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
print(f"{root}: {len(manifest['files'])} files, {size_mb:.1f} MB")

# %% [markdown]
# ## 9 · Check what shipped: load it back as `make repro` will

# %%
from neuropictor.metrics import evaluate
from neuropictor.models.foundation import check_manifest, load_foundation
from neuropictor.models.hvae import load_hvae

check_manifest(root)
found = load_foundation(root)
assert torch.equal(found.pipe.unet.conv_in.weight, unet.conv_in.weight)
load_hvae(root / "hvae")
networks = found.metric_networks()
x_sane = x_held[:min(100, n_held)]
same = evaluate(x_sane, x_sane, networks)
perm = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(x_sane)))
shuffled = evaluate(x_sane, x_sane[perm], networks)
results["metric_sanity"] = {"identical": same, "random_pairing": shuffled}
print("identical:", {k: round(v, 3) for k, v in same.items()})
print("random pairing:", {k: round(v, 3) for k, v in shuffled.items()})

# %% [markdown]
# ## Quality bars (issue 12)

# %%
r = results
bars = {
    "attribute classifier shape >= 97 %": r["attribute_classifier"]["shape accuracy"] >= 0.97,
    "attribute classifier colour >= 97 %": r["attribute_classifier"]["colour accuracy"] >= 0.97,
    "attribute classifier size >= 95 %": r["attribute_classifier"]["size accuracy"] >= 0.95,
    "VAE PSNR >= 30 dB": r["vae"]["psnr_db"] >= 30,
    "VAE SSIM >= 0.95": r["vae"]["ssim"] >= 0.95,
    "CLIP top-1 among 100 >= 90 %": r["clip"]["top1_retrieval"] >= 0.90,
    "CLIP shape pick >= 90 %": r["clip"]["shape_pick"] >= 0.90,
    "text-to-image shape >= 85 %": r["text_to_image"]["shape"] >= 0.85,
    "text-to-image colour >= 90 %": r["text_to_image"]["colour"] >= 0.90,
    "text-to-image size >= 80 %": r["text_to_image"]["size"] >= 0.80,
    "hierarchical VAE PSNR >= 26 dB (all groups)": r["hvae"]["psnr_db_all_groups"] >= 26,
    "identical images: PixCorr 1, SSIM 1, identification 100 %": all(
        abs(v - 1) < 1e-6 for k, v in same.items() if not k.startswith(("EffNet", "SwAV"))),
}
# from scratch = every model's training time (summed over resumed parts) + this run's other work
# (corpus, latents, checks), i.e. this run's wall time less the part spent inside `fit` here
known = all(v is not None for v in training_minutes.values())
other_here = max(0.0, (time.time() - T0) / 60 - sum(fit_minutes_here)) if known else None
from_scratch = round(sum(training_minutes.values()) + other_here, 1) if known else None
results["training_minutes"] = training_minutes
results["from_scratch_minutes"] = from_scratch
bars["make foundation <= 150 min (training minutes + the rest)"] = None if from_scratch is None else from_scratch <= 150
if from_scratch is None:
    print("make foundation from scratch: not measured (checkpoints of",
          [k for k, v in training_minutes.items() if v is None], "predate the logged training time)")
results["bars"] = bars
results["minutes"] = round((time.time() - T0) / 60, 2)
results["stage_minutes"] = timings
for k, ok in bars.items():
    print(f"{'PASS' if ok else 'FAIL' if ok is False else 'N/A '}  {k}")
save_json(OUT / "metrics.json", results)
