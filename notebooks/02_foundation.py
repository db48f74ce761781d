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
# # 02 · Foundation models: VAE, CLIP pair, text-to-image UNet, metric stand-ins
#
# NeuroPictor builds on Stable Diffusion 2.1 (VAE, OpenCLIP ViT-H/14 text encoder, UNet) and is
# scored with ImageNet/OpenAI networks. None of these weights can be had offline, so the
# **synthetic world trains its own**, small enough for 2 CPU cores, and saves them *in the
# formats the paper's weights use*: a diffusers Stable-Diffusion pipeline folder (VAE
# `AutoencoderKL`, `CLIPTextModel` + tokenizer, `UNet2DConditionModel`, DDIM scheduler) and a
# transformers `CLIPModel`. Later stages load either world's models with the same code.
#
# 1. **VAE** on the training stimuli: 64 px RGB -> 4 x 16 x 16 latents;
# 2. **CLIP pair**: text tower (`CLIPTextModel`, offline tokenizer) + ViT image tower, contrastive
#    on image-caption pairs;
# 3. **text-to-image UNet** on the VAE latents, conditioned on the text tower's token states,
#    with 10 % empty captions so classifier-free guidance works;
# 4. **metric stand-ins** (dagger in every table): attribute CNNs whose layers play AlexNet(2)/(5),
#    Inception and EffNet-B; the CLIP image tower plays CLIP; the VAE encoder plays SwAV. The
#    first CNN's heads are the *attribute classifier* of the synthetic-world metrics.
#
# Quality bars, on the 100 held-out (shared test) stimuli: VAE PSNR >= 28 dB and SSIM >= 0.90;
# image -> caption top-1 retrieval >= 80 %; images generated from held-out captions have the
# caption's shape and colour >= 80 % of the time; metric-suite sanity.
#
# Reads: `data/prepared/`. Writes: `data/foundation/`, `metrics/foundation.json`, `figures/foundation/`.
# Paper world (`world: nsd`): nothing is trained; SD-2.1 is loaded from `paths.sd_folder`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from neuropictor.config import notebook_setup
from neuropictor.io import save_json
from neuropictor.report import save_figure, stimulus_grid

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "foundation", show=("seed", "world", "smoke", "foundation"))
P = cfg.foundation
torch.manual_seed(cfg.seed)
T0 = time.time()
results = {}

# %% [markdown] tags=["paper-world-only"]
# ## Paper world: nothing to train
# SD-2.1 (VAE, OpenCLIP ViT-H/14 text encoder, UNet) is read from `paths.sd_folder` and the
# metric networks from `paths.weights` (file names in `models/pretrained.WEIGHT_FILES`); a
# missing file stops here with the path and where to get it. The stage records what it found.
# (`neuropictor.nb` keeps only the cells of the world in force: cells tagged `synthetic-only`
# run in the synthetic world, `paper-world-only` ones otherwise.)

# %% tags=["paper-world-only"]
from neuropictor.models.foundation import load_world_foundation

found = load_world_foundation(cfg)
networks = found.metric_networks()
pipe = found.pipe
record = {"world": cfg.world, "sd_folder": str(cfg.path("sd_folder")), "weights": str(cfg.path("weights")),
          "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()),
          "latent_channels": pipe.vae.config.latent_channels, "text_width": pipe.text_encoder.config.hidden_size,
          "metric_networks": sorted(networks.features)}
cfg.path("foundation").mkdir(parents=True, exist_ok=True)
save_json(cfg.path("foundation") / "paper_world.json", record)
save_json(cfg.path("metrics") / "foundation.json", record)
print(record)

# %% [markdown] tags=["synthetic-only"]
# ## Data: training stimuli and their captions; the held-out shared images
# The foundation models never see a test image: they are trained on the union of the
# subjects' own (training) images and checked on the shared test images.

# %% tags=["synthetic-only"]
from neuropictor.data.prep import Prepared
from neuropictor.data.stimuli import full_caption, scene_of_row
from neuropictor.models.foundation import images_of

prepared = Prepared(cfg.path("prepared"))
index = prepared.index
train_ids = np.sort(index[index.split == "train"].nsd_id.unique())
test_ids = np.sort(index[index.split == "test"].nsd_id.unique())
x_train, x_test = images_of(prepared, train_ids), images_of(prepared, test_ids)
captions = prepared.captions()
test_attrs = prepared.attributes(test_ids) if cfg.world == "synthetic" else None
print(f"{len(train_ids)} training images, {len(test_ids)} held-out images, {x_train.shape[-1]} px")

# %% [markdown] tags=["synthetic-only"]
# ## 1 · VAE
# `AutoencoderKL` trained on the posterior mean with L1 + MSE, object pixels weighted x10:
# backgrounds are most of every image and are learnt first; the objects carry the content.

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import VAESpec, train_vae, unit_latents
from neuropictor.train import TrainConfig
from neuropictor.metrics import ssim


def train_cfg(p, seed_offset=0):
    return TrainConfig(steps=cfg.steps(p.steps), batch_size=p.batch_size, lr=p.lr, seed=cfg.seed + seed_offset,
                       warmup=min(50, cfg.steps(p.steps) // 10), log_every=50)


t = time.time()
vae_spec = VAESpec(channels=P.vae.channels, latent_channels=P.vae.latent_channels, norm_groups=P.vae.norm_groups,
                   object_weight=P.vae.object_weight)
vae, vae_history = train_vae(2 * x_train - 1, vae_spec, train_cfg(P.vae))
with torch.no_grad():
    rec_test = ((vae.decode(vae.encode(2 * x_test - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)
mse = ((rec_test - x_test) ** 2).flatten(1).mean(1)
results["vae"] = {"psnr_db": float((10 * torch.log10(1 / mse)).mean()), "ssim": ssim(x_test, rec_test),
                  "seconds": round(time.time() - t, 1)}
z_train, scale = unit_latents(vae, x_train)  # the UNet's training latents, unit variance
print(results["vae"], f"latent scale {scale:.3f}")

# %% tags=["synthetic-only"]
def pairs_figure(top, bottom, labels, n=8):
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n, 3.1))
    for i in range(n):
        for row, imgs in enumerate((top, bottom)):
            axes[row, i].imshow(imgs[i].permute(1, 2, 0).numpy())
            axes[row, i].set_axis_off()
        axes[0, i].set_title(str(i), fontsize=7)
    for row, label in enumerate(labels):
        axes[row, 0].text(-8, 32, label, ha="right", va="center", fontsize=8)
    return fig


fig = pairs_figure(x_test, rec_test, ["stimulus", "VAE"])
fig.suptitle(f"VAE on held-out stimuli: PSNR {results['vae']['psnr_db']:.1f} dB, SSIM {results['vae']['ssim']:.3f}")
save_figure(fig, FIG / "vae_reconstructions.png")

# %% [markdown] tags=["synthetic-only"]
# ## 2 · CLIP pair
# A `CLIPModel` (text tower `CLIPTextModel`, ViT image tower) with an offline tokenizer built
# from the training captions. Each step pairs every image with one of its five captions.
# The retrieval test pairs each held-out image with its *full* caption (every object, the
# position and the background): the other caption styles leave many scenes equally well
# described (e.g. "a red ring on a dark background"), so they cannot identify an image.
# Training pairs an image with its full caption half the time (`clip.full_caption_share`).

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import CLIPSpec, build_clip, clip_loss, clip_retrieval
from neuropictor.models.tokenizer import build_tokenizer
from neuropictor.train import TensorBatches, fit

t = time.time()
tokenizer = build_tokenizer([c for i in train_ids for c in captions[int(i)]], max_length=P.clip.max_length)


def token_ids(texts):
    return tokenizer(texts, padding="max_length", truncation=True, max_length=P.clip.max_length,
                     return_tensors="pt").input_ids




def full_first(ids, attrs):
    """Each image's captions with its full caption moved to the front (column 0)."""
    if attrs is None:  # paper world: COCO captions have no "full" one; keep their order
        return [captions[int(i)] for i in ids]
    out = []
    for i, (_, row) in zip(ids, attrs.iterrows()):
        full = full_caption(scene_of_row(row))
        out.append([full] + [c for c in captions[int(i)] if c != full][:4])
    return out


train_attrs = prepared.attributes(train_ids) if cfg.world == "synthetic" else None
train_caps = [c for caps in full_first(train_ids, train_attrs) for c in caps]
ids_train = token_ids(train_caps).reshape(len(train_ids), 5, -1)
test_full = [caps[0] for caps in full_first(test_ids, test_attrs)]
ids_test = token_ids(test_full)
clip_spec = CLIPSpec(width=P.clip.width, layers=P.clip.layers, heads=P.clip.heads, embed_dim=P.clip.embed_dim,
                     max_length=P.clip.max_length, patch=P.clip.patch)
torch.manual_seed(cfg.seed)
clip = build_clip(clip_spec, len(tokenizer), x_train.shape[-1])
clip_history = fit(clip, clip_loss(P.clip.full_caption_share), TensorBatches(x_train, ids_train), train_cfg(P.clip, 1), desc="clip")
results["clip"] = {"top1_retrieval": clip_retrieval(clip, x_test, ids_test), "chance": 1 / len(test_ids),
                   "seconds": round(time.time() - t, 1)}
print(results["clip"])

# %% [markdown] tags=["synthetic-only"]
# ## 3 · Text-to-image UNet
# Trained on the VAE latents (times the scale that gives them unit variance) of the training
# images, conditioned on the frozen text tower's token states of a random one of each image's
# captions; 10 % of captions are replaced by the empty caption. Like SD-2.1 it predicts the
# velocity v (`unet.prediction`); unlike SD, its noise schedule is rescaled to zero terminal
# SNR (`unet.zero_terminal_snr`, Lin et al. 2024). SD's schedule leaves a trace of the image at
# t = T (here: enough to read the background from the latent's mean), so samples started from
# pure noise got the wrong background; with the rescaled schedule they get the caption's.

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import (UNetSpec, build_unet, diffusion_loss, noise_schedule, save_pipeline,
                                           text_encoder_of)

t = time.time()
text_encoder = text_encoder_of(clip).requires_grad_(False)
with torch.no_grad():
    empty_states = text_encoder(input_ids=token_ids([""])).last_hidden_state
schedule = dict(prediction_type=P.unet.prediction, zero_terminal_snr=P.unet.zero_terminal_snr)
noise_scheduler = noise_schedule("ddpm", **schedule)
unet_spec = UNetSpec(channels=P.unet.channels, heads=P.unet.heads, empty_caption_rate=P.unet.empty_caption_rate)
torch.manual_seed(cfg.seed)
unet = build_unet(unet_spec, z_train.shape[-1], z_train.shape[1], P.clip.width)
print(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, latents {tuple(z_train.shape[1:])}")
unet_history = fit(unet, diffusion_loss(noise_scheduler, empty_states, P.unet.empty_caption_rate, text_encoder,
                                        P.unet.snr_gamma),
                   TensorBatches(z_train, ids_train), train_cfg(P.unet, 2), desc="unet")
results["unet"] = {"final_loss": unet_history[-1]["loss"], "seconds": round(time.time() - t, 1)}

# %% [markdown] tags=["synthetic-only"]
# ## 4 · Metric stand-ins and the attribute classifier

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import save_standins
from neuropictor.models.standins import attribute_metrics, predict_attributes, train_attribute_net

t = time.time()
if cfg.world == "synthetic":
    standins = {"attribute_net": train_attribute_net(x_train, train_attrs, P.standins.width, train_cfg(P.standins, 3)),
                "second_net": train_attribute_net(x_train, train_attrs, P.standins.second_width, train_cfg(P.standins, 4))}
    classifier = attribute_metrics(predict_attributes(standins["attribute_net"], x_test), test_attrs)
    results["attribute_classifier"] = dict(classifier, seconds=round(time.time() - t, 1))
    print("attribute classifier on held-out stimuli:", results["attribute_classifier"])

# %% [markdown] tags=["synthetic-only"]
# ## Save: a Stable-Diffusion-style pipeline folder, the CLIP pair, the stand-ins
# Everything is written to a temporary folder and renamed when complete.

# %% tags=["synthetic-only"]
root = cfg.path("foundation")
root.mkdir(parents=True, exist_ok=True)
save_pipeline(root / "pipeline", vae, text_encoder, tokenizer, unet, scale, noise_schedule("ddim", **schedule))
from neuropictor.io import atomic_dir

with atomic_dir(root / "clip") as tmp:
    clip.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
save_standins(root / "standins", standins)  # last: its presence marks the folder complete
print(sorted(p.name for p in root.iterdir()))

# %% [markdown] tags=["synthetic-only"]
# ## Text-to-image check, through the saved pipeline
# The pipeline is loaded back from disk (as any SD-2.1 folder would be) and draws one image
# per held-out full caption (DDIM, classifier-free guidance). The attribute classifier then
# reads the primary object's shape and colour from each image.

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import load_foundation

t = time.time()
found = load_foundation(root)
generator = torch.Generator().manual_seed(cfg.seed)
generated = found.pipe(test_full, num_inference_steps=P.sample_steps, guidance_scale=P.guidance,
                       generator=generator, output_type="pt").images.float().clamp(0, 1)
pred = predict_attributes(found.standins["attribute_net"], generated)
t2i = attribute_metrics(pred, test_attrs)
both = float(((pred["shape"].to_numpy() == test_attrs["shape_0"].to_numpy())
              & (pred["colour"].to_numpy() == test_attrs["colour_0"].to_numpy())).mean())
results["text_to_image"] = {"shape_and_colour": both, "shape": t2i["shape accuracy"], "colour": t2i["colour accuracy"],
                            "size": t2i["size accuracy"], "seconds": round(time.time() - t, 1)}
print(results["text_to_image"])

# %% tags=["synthetic-only"]
import textwrap

n_show = 8
fig, axes = plt.subplots(2, n_show, figsize=(1.9 * n_show, 4.4))
for i in range(n_show):
    axes[0, i].imshow(x_test[i].permute(1, 2, 0).numpy())
    axes[1, i].imshow(generated[i].permute(1, 2, 0).numpy())
    axes[0, i].set_title(textwrap.fill(test_full[i].split(" and ")[0], 24), fontsize=6)
    axes[1, i].set_title(f"read: {pred['colour'][i]} {pred['shape'][i]}", fontsize=6)
    for a in axes[:, i]:
        a.set_axis_off()
fig.suptitle(f"Held-out caption -> image (top: the stimulus it describes). Shape & colour right: {both:.0%}")
save_figure(fig, FIG / "text_to_image.png")

# %% [markdown] tags=["synthetic-only"]
# ## Why text-to-image misses shape: two probes of the text side
# 1. *Text tower*: how much the token states move when one word of a caption changes
#    (`state_spread`, relative to their norm), per attribute. The UNet sees only these states.
# 2. *CLIP pair*: for each held-out image, its full caption against the same caption with the
#    primary object's shape changed to each other shape: how often the true one scores best
#    (chance 20 %).

# %% tags=["synthetic-only"]
from neuropictor.data.stimuli import BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene
from neuropictor.models.foundation import clip_embed_images, clip_embed_text, state_spread

pipe = found.pipe


def probe_caption(size="large", colour="red", shape="circle", background="dark"):
    return f"a {size} {colour} {shape} in the center on a {background} background"


spread = {attr: state_spread(pipe.text_encoder, pipe.tokenizer, [probe_caption(**{attr: w}) for w in words])
          for attr, words in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("background", BACKGROUNDS))}
scenes = [scene_of_row(row) for _, row in test_attrs.iterrows()]


def with_primary(scene, **change):
    """The scene's full caption with the primary object's attributes changed."""
    return full_caption(Scene(scene.background, [dict(scene.objects[0], **change)] + scene.objects[1:]))


img_emb = clip_embed_images(found.clip, x_test)
sims = torch.stack([(img_emb * clip_embed_text(found.clip, token_ids([with_primary(sc, shape=sh) for sc in scenes])))
                    .sum(1) for sh in SHAPES], 1)
true_shape = np.array([SHAPES.index(sc.objects[0]["shape"]) for sc in scenes])
clip_shape_pick = float((sims.argmax(1).numpy() == true_shape).mean())

results["text_to_image"]["probes"] = {"state_spread": spread, "clip_shape_pick": clip_shape_pick}
print(results["text_to_image"]["probes"])

# %% [markdown] tags=["synthetic-only"]
# ## Where the UNet loses shape: denoising from a noised stimulus
# 3. *UNet*: each held-out stimulus is noised to a fraction `strength` of the schedule and
#    denoised again under its own full caption (diffusers' img2img pipeline on the saved
#    models, same DDIM steps and guidance). Strength 0 returns the stimulus; strength 1 is
#    text-to-image. The attribute classifier reads what survives at each noise level.

# %% tags=["synthetic-only"]
from diffusers import StableDiffusionImg2ImgPipeline

img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
img2img.set_progress_bar_config(disable=True)
strengths = [0.2, 0.4, 0.6, 0.8]
kept = {}
for strength in strengths:
    out = img2img(test_full, image=x_test, strength=strength, num_inference_steps=P.sample_steps,
                  guidance_scale=P.guidance, generator=torch.Generator().manual_seed(cfg.seed),
                  output_type="pt").images.float().clamp(0, 1)
    kept[strength] = attribute_metrics(predict_attributes(found.standins["attribute_net"], out), test_attrs)
results["text_to_image"]["probes"]["img2img"] = {str(s): {"shape": m["shape accuracy"], "colour": m["colour accuracy"]}
                                                 for s, m in kept.items()}
levels = [0.0, *strengths, 1.0]
curves = {"shape": [results["attribute_classifier"]["shape accuracy"], *[kept[s]["shape accuracy"] for s in strengths],
                    results["text_to_image"]["shape"]],
          "colour": [results["attribute_classifier"]["colour accuracy"],
                     *[kept[s]["colour accuracy"] for s in strengths], results["text_to_image"]["colour"]]}
fig, ax = plt.subplots(figsize=(5, 3.2))
for name, ys in curves.items():
    ax.plot(levels, [100 * y for y in ys], "o-", label=name)
ax.axhline(100 / len(SHAPES), color="C0", ls=":", lw=1, label="shape chance")
ax.axhline(100 / len(COLOURS), color="C1", ls=":", lw=1, label="colour chance")
ax.set(xlabel="img2img strength (0 = the stimulus, 1 = text-to-image)", ylabel="read by the classifier (%)",
       ylim=(0, 100), title="What the UNet keeps of a noised stimulus")
ax.legend(fontsize=7)
save_figure(fig, FIG / "noise_level_probe.png")
print({s: {k: round(v, 2) for k, v in m.items() if "accuracy" in k} for s, m in kept.items()})

# %% [markdown] tags=["synthetic-only"]
# ## Metric-suite sanity
# Identical images must give PixCorr 1, SSIM 1 and 100 % identification; a random pairing
# about 50 % identification.

# %% tags=["synthetic-only"]
from neuropictor.metrics import evaluate

networks = found.metric_networks()
same = evaluate(x_test, x_test, networks)
perm = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(x_test)))
shuffled = evaluate(x_test, x_test[perm], networks)
results["metric_sanity"] = {"identical": same, "random_pairing": shuffled}
print("identical:", {k: round(v, 3) for k, v in same.items()})
print("random pairing:", {k: round(v, 3) for k, v in shuffled.items()})

# %% [markdown] tags=["synthetic-only"]
# ## Quality bars

# %% tags=["synthetic-only"]
bars = {
    "VAE PSNR >= 28 dB": results["vae"]["psnr_db"] >= 28,
    "VAE SSIM >= 0.90": results["vae"]["ssim"] >= 0.90,
    "CLIP top-1 retrieval >= 80 %": results["clip"]["top1_retrieval"] >= 0.80,
    "text-to-image shape & colour >= 80 %": results["text_to_image"]["shape_and_colour"] >= 0.80,
    "identical images: PixCorr 1, SSIM 1, identification 100 %": all(
        abs(v - 1) < 1e-6 for k, v in same.items() if not k.startswith(("EffNet", "SwAV"))),
    "random pairing: identification 35-65 %": all(
        0.35 <= v <= 0.65 for k, v in shuffled.items() if k.startswith(("AlexNet", "Inception", "CLIP"))),
}
results["minutes"] = round((time.time() - T0) / 60, 2)
bars["stage <= 12 min"] = results["minutes"] <= 12
results["bars"] = bars
for k, ok in bars.items():
    print(f"{'PASS' if ok else 'FAIL'}  {k}")
save_json(cfg.path("metrics") / "foundation.json", results)
