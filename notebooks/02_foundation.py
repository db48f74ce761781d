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
# # 02 · Foundation models: loaded, never trained here
#
# NeuroPictor builds on Stable Diffusion 2.1 (VAE, OpenCLIP ViT-H/14 text encoder, UNet) and is
# scored with ImageNet/OpenAI networks; it trains none of them. This stage does the same:
#
# - **synthetic world**: the *shipped foundation* under `paths.foundation`
#   (`foundation/weights/`: VAE, CLIP pair, text-to-image UNet as a diffusers Stable-Diffusion
#   folder, hierarchical VAE, metric stand-ins), trained once by `make foundation` on a corpus
#   of its own (see `foundation/foundation.py`) and committed with a manifest of hashes. This
#   notebook checks every file against the manifest, then measures the models on *this
#   world's* held-out stimuli (the shared test images), which the foundation never saw;
# - **paper world** (`world: nsd`): SD-2.1 is loaded from `paths.sd_folder` and the metric
#   networks from `paths.weights`.
#
# Reads: `data/prepared/`, `foundation/weights/`. Writes: `metrics/foundation.json`, `figures/foundation/`.

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
from neuropictor.report import save_figure

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "foundation", show=("seed", "world", "smoke"))
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
save_json(cfg.path("metrics") / "foundation.json", record)
print(record)

# %% [markdown] tags=["synthetic-only"]
# ## The shipped foundation: manifest, then load
# A file that differs from its recorded sha256 stops here, naming the file.

# %% tags=["synthetic-only"]
from neuropictor.models.foundation import check_manifest, load_foundation
from neuropictor.models.hvae import load_hvae

manifest = check_manifest(cfg.path("foundation"))
found = load_foundation(cfg.path("foundation"))
hvae = load_hvae(cfg.path("foundation") / "hvae")
pipe = found.pipe
results["shipped"] = {"files": len(manifest["files"]), "corpus_scenes": manifest["corpus_scenes"],
                      "steps": manifest["steps"], "training_minutes": manifest["quality"].get("minutes"),
                      "quality_on_corpus": {k: manifest["quality"][k] for k in
                                            ("attribute_classifier", "vae", "clip", "text_to_image", "hvae")}}
print(f"{len(manifest['files'])} files match the manifest; trained {manifest['steps']} steps on "
      f"{manifest['corpus_scenes']} corpus scenes")

# %% [markdown] tags=["synthetic-only"]
# ## This world's held-out stimuli
# The shared test images of the simulated experiment, their full captions and attributes.

# %% tags=["synthetic-only"]
from neuropictor.data.prep import Prepared
from neuropictor.data.stimuli import full_caption, scene_of_row
from neuropictor.models.foundation import images_of

prepared = Prepared(cfg.path("prepared"))
index = prepared.index
test_ids = np.sort(index[index.split == "test"].nsd_id.unique())
x_test = images_of(prepared, test_ids)
test_attrs = prepared.attributes(test_ids)
test_full = [full_caption(scene_of_row(row)) for _, row in test_attrs.iterrows()]
print(f"{len(test_ids)} held-out stimuli, {x_test.shape[-1]} px")

# %% [markdown] tags=["synthetic-only"]
# ## Attribute classifier, VAE, CLIP pair, hierarchical VAE on the stimuli

# %% tags=["synthetic-only"]
from neuropictor.metrics import ssim
from neuropictor.models.foundation import clip_retrieval
from neuropictor.models.standins import attribute_metrics, predict_attributes

classifier = found.standins["attribute_net"]
results["attribute_classifier"] = attribute_metrics(predict_attributes(classifier, x_test), test_attrs)
with torch.no_grad():
    rec_test = ((pipe.vae.decode(pipe.vae.encode(2 * x_test - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)
    zs = hvae.encode(2 * x_test - 1)
    rec_hvae = ((hvae.decode(zs) + 1) / 2).clamp(0, 1)


def psnr(x, y):
    return float((10 * torch.log10(1 / ((x - y) ** 2).flatten(1).mean(1))).mean())


results["vae"] = {"psnr_db": psnr(x_test, rec_test), "ssim": ssim(x_test, rec_test)}
results["hvae"] = {"psnr_db_all_groups": psnr(x_test, rec_hvae)}
ids = pipe.tokenizer(test_full[:100], padding="max_length", truncation=True,
                     max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
results["clip"] = {"top1_retrieval": clip_retrieval(found.clip, x_test[:100], ids), "among": min(100, len(test_ids))}
for key in ("attribute_classifier", "vae", "hvae", "clip"):
    print(key, results[key])

fig, axes = plt.subplots(3, 8, figsize=(11, 4.4))
for i in range(min(8, len(x_test))):
    for row, imgs in enumerate((x_test, rec_test, rec_hvae)):
        axes[row, i].imshow(imgs[i].permute(1, 2, 0).numpy())
        axes[row, i].set_axis_off()
for row, label in enumerate(["stimulus", "VAE", "hierarchical VAE"]):
    axes[row, 0].set_title(label, fontsize=8, loc="left")
fig.suptitle(f"Held-out stimuli through the shipped autoencoders: VAE {results['vae']['psnr_db']:.1f} dB, "
             f"hierarchical VAE {results['hvae']['psnr_db_all_groups']:.1f} dB", fontsize=9)
save_figure(fig, FIG / "vae_reconstructions.png")

# %% [markdown] tags=["synthetic-only"]
# ## Text-to-image from the stimuli's captions
# Each held-out stimulus's full caption drawn once by the shipped pipeline (DDIM
# `foundation.sample_steps`, guidance `foundation.guidance`); the classifier reads the
# primary object. This is the ceiling every diffusion-based decoder here works under.

# %% tags=["synthetic-only"]
import textwrap

from neuropictor.models.foundation import text_to_image_check

t2i, generated, read = text_to_image_check(pipe, test_full, test_attrs, classifier, cfg.foundation.sample_steps,
                                           cfg.foundation.guidance, cfg.seed)
results["text_to_image"] = t2i
print(t2i)
n_show = min(8, len(x_test))
fig, axes = plt.subplots(2, n_show, figsize=(1.9 * n_show, 4.4), squeeze=False)
for i in range(n_show):
    axes[0, i].imshow(x_test[i].permute(1, 2, 0).numpy())
    axes[1, i].imshow(generated[i].permute(1, 2, 0).numpy())
    axes[0, i].set_title(textwrap.fill(test_full[i].split(" and ")[0], 24), fontsize=6)
    axes[1, i].set_title(f"read: {read['colour'][i]} {read['shape'][i]}", fontsize=6)
    for a in axes[:, i]:
        a.set_axis_off()
fig.suptitle(f"Held-out caption -> image (top: the stimulus it describes). Shape {t2i['shape']:.0%}, "
             f"colour {t2i['colour']:.0%}")
save_figure(fig, FIG / "text_to_image.png")

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
# ## Quality bars on this world's stimuli

# %% tags=["synthetic-only"]
r = results
bars = {
    "attribute classifier shape >= 97 %": r["attribute_classifier"]["shape accuracy"] >= 0.97,
    "attribute classifier colour >= 97 %": r["attribute_classifier"]["colour accuracy"] >= 0.97,
    "attribute classifier size >= 95 %": r["attribute_classifier"]["size accuracy"] >= 0.95,
    "VAE PSNR >= 30 dB": r["vae"]["psnr_db"] >= 30,
    "VAE SSIM >= 0.95": r["vae"]["ssim"] >= 0.95,
    "CLIP top-1 among 100 >= 90 %": r["clip"]["top1_retrieval"] >= 0.90,
    "text-to-image shape >= 85 %": r["text_to_image"]["shape"] >= 0.85,
    "text-to-image colour >= 90 %": r["text_to_image"]["colour"] >= 0.90,
    "text-to-image size >= 80 %": r["text_to_image"]["size"] >= 0.80,
    "hierarchical VAE PSNR >= 26 dB": r["hvae"]["psnr_db_all_groups"] >= 26,
    "identical images: PixCorr 1, SSIM 1, identification 100 %": all(
        abs(v - 1) < 1e-6 for k, v in same.items() if not k.startswith(("EffNet", "SwAV"))),
    "random pairing: identification 35-65 %": all(
        0.35 <= v <= 0.65 for k, v in shuffled.items() if k.startswith(("AlexNet", "Inception", "CLIP"))),
}
results["minutes"] = round((time.time() - T0) / 60, 2)
results["bars"] = bars
for k, ok in bars.items():
    print(f"{'PASS' if ok else 'FAIL'}  {k}")
save_json(cfg.path("metrics") / "foundation.json", results)
