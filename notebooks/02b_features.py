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
# # 02b · Per-image features, computed once and kept on disk
#
# Every later stage needs the same two things of each stimulus: its **VAE latent** z0 (what
# the UNet denoises; what Takagi & Nishimoto, NeuralDiffuser and the other voxel methods
# decode) and the frozen text tower's **caption states** (NeuroPictor's L_sem target; the
# methods' text condition c). This stage encodes every prepared stimulus once, on
# `compute.device`, `compute.feature_batch` images at a time, into arrays under
# `paths.features` keyed by nsd_id; training and sampling read only the rows they need
# (`neuropictor.features`). In the paper world that is what keeps 73k images' latents
# (4 x 64 x 64) and states (77 x 1024) out of memory: ~19 GB at float32 on disk, never in RAM.
#
# Reads: `data/prepared/`, the foundation. Writes: `data/features/` (`latents.npy`,
# `caption_states.npy`, `nsd_ids.npy`, `manifest.json`), `metrics/features.json`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import numpy as np
import torch

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.features import FeatureStore, compute_features
from neuropictor.io import save_json
from neuropictor.models.foundation import image_latents, images_of, load_world_foundation

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "features", show=("seed", "world", "smoke", "compute"))
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)

# %% [markdown]
# ## Encode every stimulus once

# %%
manifest = compute_features(cfg, prepared, found)
store = FeatureStore(cfg.path("features"))
for k, v in manifest.items():
    print(f"{k:15s} {v}")
sizes = {p.name: p.stat().st_size / 2 ** 20 for p in cfg.path("features").glob("*.npy")}
print({k: f"{v:.1f} MiB" for k, v in sizes.items()})

# %% [markdown]
# ## Check: the stored rows are the encoder's output
# A few stimuli encoded again, one at a time, against the rows read back by nsd_id; and
# the latents decode to the stimuli (the VAE's reconstruction PSNR).

# %%
ids = store.ids[np.linspace(0, len(store.ids) - 1, 8).round().astype(int)]
with torch.no_grad():
    again = torch.cat([image_latents(found.pipe.vae, images_of(prepared, ids[i:i + 1])) for i in range(len(ids))])
    stored = store.latents(ids)
    decoded = (found.pipe.vae.decode(stored / found.pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
gap = float((again - stored).abs().max() / again.abs().max())
mse = float(((decoded - images_of(prepared, ids)) ** 2).mean())
psnr = 10 * np.log10(1 / mse)
print(f"stored vs re-encoded latents: max relative difference {gap:.2e}; decoded stimuli PSNR {psnr:.1f} dB")
if gap > 1e-3:
    raise AssertionError(f"stored latents differ from the encoder's output by {gap:.2e}: the store is stale")

# %%
save_json(cfg.path("metrics") / "features.json", {
    "n_images": manifest["n_images"], "latents": manifest["latents"], "caption_states": manifest["caption_states"],
    "dtype": manifest["dtype"], "MiB": {k: round(v, 1) for k, v in sizes.items()},
    "max_relative_difference": gap, "decoded_psnr_db": round(psnr, 2),
    "minutes": round((time.time() - T0) / 60, 2)})
