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
# # 03 · fMRI calibrated encoding: a guide-token MAE over flatmaps (Sec. 3.1)
#
# A ViT autoencoder reads a whole flatmap (patches + one learned **guide token**); the decoder
# then sees *only* the guide token next to one mask token per patch, i.e. every patch is
# masked, so the guide token must carry the whole map. Trained on the resting-state corpus
# (the UK Biobank stand-in) only; task data is never seen here. Downstream (stage 04) the
# encoder's output S^r is either the full token sequence (L_r = 1 + patches) or the guide
# token alone (the "[CLS]" ablation).
#
# Checks: reconstruction correlation (Pearson r over cortex pixels) on corpus subjects held
# out from training, and on the task flatmaps of the 8 NSD-like subjects (unseen modality).
# A task map is mostly trial noise (median noise ceiling ~36 %), so its reconstruction is also
# judged against the map's **reliability**: each shared image's repeats split in two halves
# (prep's `flatmap_halves.npz`), the split-half r(A, B) says how much of a map repeats, and
# r(recon(A), B), the encoder's rebuild of one half against the other half, says how much of
# that repeatable part the guide token carries. The corpus maps are normalised as the task
# maps are (`prep.corpus_zscore`: per vertex), so what is learnt there is asked for here.
#
# Reads: `data/prepared/`. Writes: `data/encoder/`, `metrics/encoder.json`, `figures/encoder/`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import shutil
import time

import numpy as np
import pandas as pd
import torch

from neuropictor.config import notebook_setup
from neuropictor.io import DataError, save_json
from neuropictor.report import flatmap_grid, save_figure

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "encoder", show=("seed", "smoke", "encoder"))
T0 = time.time()
torch.manual_seed(cfg.seed)

# %% [markdown]
# ## Corpus split by subject

# %%
from neuropictor.data.prep import Prepared

prepared = Prepared(cfg.path("prepared"))
root = cfg.path("prepared")
corpus = torch.from_numpy(np.load(root / "corpus_flatmaps.npy"))
corpus_index = pd.read_csv(root / "corpus_index.csv")
mask = np.load(root / "flatmap_mask.npy")
people = corpus_index.participant_id.unique()
n_hold = min(cfg.encoder.holdout_corpus_subjects, max(1, len(people) // 3))
held = corpus_index.participant_id.isin(people[-n_hold:]).to_numpy()
print(f"corpus: {len(people)} subjects, {len(corpus)} maps; training on {len(people) - n_hold}, "
      f"{n_hold} held out ({held.sum()} maps)")

# %% [markdown]
# ## Train

# %%
from neuropictor.decoding import encoder_spec, stage_checkpoint
from neuropictor.models.fmri_encoder import (FlatmapMAE, mae_loss, recon_correlation, save_encoder,
                                             split_half_readout, summarise_split_half)
from neuropictor.compute import train_settings
from neuropictor.train import TensorBatches, TrainConfig, fit

e = cfg.encoder
steps = cfg.steps(e.steps)
model = FlatmapMAE(encoder_spec(cfg), torch.from_numpy(mask))
print(f"encoder + decoder: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
      f"S^r = {model.tokens('full')} x {model.width}")
checkpoints = stage_checkpoint(cfg, "encoder", cfg.path("prepared"))  # outside DVC's outputs: a kill resumes
history = fit(model, mae_loss, TensorBatches(corpus[~held]),
              TrainConfig(steps=steps, batch_size=e.batch_size, lr=e.lr, seed=cfg.seed, warmup=min(100, steps // 10),
                          log_every=50, **train_settings(cfg.compute)), checkpoints, desc="guide-token MAE")
save_encoder(cfg.path("encoder"), model)
shutil.rmtree(checkpoints, ignore_errors=True)  # complete: the saved encoder is the stage's output

# %% [markdown]
# ## Reconstruction of unseen maps

# %%
@torch.no_grad()
def recon(maps):
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    return torch.cat([model(maps[s:s + 256]) for s in range(0, len(maps), 256)]), maps


rows = {}
pred, target = recon(corpus[held])
rows["corpus, held-out subjects"] = recon_correlation(pred, target, mask)
task_pred, task_target = {}, {}
for s in cfg.prep.subjects:
    task_pred[s], task_target[s] = recon(prepared.flatmaps(s, "test"))
rows["task flatmaps (8 subjects, test images)"] = np.concatenate(
    [recon_correlation(task_pred[s], task_target[s], mask) for s in cfg.prep.subjects])
summary = {k: {"mean_r": float(v.mean()), "median_r": float(np.median(v)), "n": int(v.size)} for k, v in rows.items()}
print(pd.DataFrame(summary).T.round(3))

# %% [markdown]
# ## Against the maps' reliability (split halves of the shared images' repeats)
# `split-half r(A, B)`: how much of a map repeats; `r(recon(A), B)`: how much of that the
# encoder's rebuild of half A carries; their ratio is the share of the repeatable signal the
# guide token keeps (1 = all of it; above 1 = the rebuild also removed noise).

# %%
parts = []
for s in cfg.prep.subjects:
    try:
        _, halves = prepared.flatmap_halves(s)
    except DataError as err:  # a world without repeats (own scans): nothing to split
        print(f"subj{s:02d}: no split halves ({err})")
        continue
    parts.append(split_half_readout(lambda maps: recon(maps)[0], halves, mask))
reliability = summarise_split_half(parts)
print(pd.Series(reliability).round(3))
result = {"reconstruction": summary, "task reliability": reliability, "final_loss": history[-1]["loss"],
          "minutes": round((time.time() - T0) / 60, 2)}

# %%
s0 = cfg.prep.subjects[0]
show = np.concatenate([target[:3].numpy(), pred[:3].numpy(), task_target[s0][:3].numpy(), task_pred[s0][:3].numpy()])
titles = [f"corpus {i}" for i in range(3)] + [f"recon {i}" for i in range(3)] + \
    [f"task subj{s0:02d} #{i}" for i in range(3)] + [f"recon #{i}" for i in range(3)]
fig = flatmap_grid(show, mask, titles=titles, cols=6)
fig.suptitle("Guide-token MAE: every patch masked; maps rebuilt from the guide token alone")
save_figure(fig, FIG / "reconstructions.png")
save_json(cfg.path("metrics") / "encoder.json", result)
