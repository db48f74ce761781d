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
# # 05 · Takagi & Nishimoto: ridge to the latent and the text condition
#
# Takagi & Nishimoto (CVPR 2023) decode two things linearly from the voxels: the image latent
# z (the VAE's) and the text condition c (the text tower's token states). Reconstruction is
# img2img through the frozen foundation pipeline from the decoded z (strength
# `methods.takagi.strength`), conditioned on the decoded c with classifier-free guidance.
# The penalty is picked per target block by efficient leave-one-out over `prep.ridge.alphas`.
#
# Writes `data/reconstructions/takagi/`, `figures/methods/takagi/`, `metrics/methods/takagi.json`;
# notebook 07 scores every method into Table 1.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import pandas as pd

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.io import save_json
from neuropictor.methods import (comparison_figure, draw, method_subjects, r2_score, save_reconstructions, subject_data,
                                 takagi)
from neuropictor.models.foundation import load_world_foundation
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "methods/takagi", show=("seed", "world", "smoke"))
print(cfg.methods.takagi)
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)

# %% [markdown]
# ## Fit, decode, draw
# How much of each target's test variance the ridge explains (R^2 over all numbers, against
# the test mean) is printed beside the draw.

# %%
record, shown = {}, {}
for s in method_subjects(cfg):
    t = time.time()
    data = subject_data(cfg, prepared, s)
    decoded = takagi.fit_decode(cfg, data, cfg.seed)
    images = draw(found, decoded, cfg, cfg.methods.takagi.strength)
    save_reconstructions(cfg, "takagi", s, data.ids_test, images, decoded.c, decoded.z)
    record[str(s)] = {"z_r2": r2_score(decoded.z, data.z_test),
                      "c_r2": r2_score(decoded.c, data.c_test) if data.text else None}
    shown[s] = (data.images_test, images)
    print(f"subject {s}: R^2 z {record[str(s)]['z_r2']:.3f}, c {record[str(s)]['c_r2'] or float('nan'):.3f} "
          f"({time.time() - t:.0f} s)")

# %%
r2_table = pd.DataFrame(record).T.rename(columns={"z_r2": "R^2 latent z", "c_r2": "R^2 text states c"})
r2_table.index.name = "subject"
write_table(r2_table.astype(float).round(4), cfg.path("tables") / "takagi" / "decoding_r2",
            "Takagi & Nishimoto: ridge R^2 of the test targets (all numbers, against the test mean).")
print(r2_table.round(3))

# %%
s0 = method_subjects(cfg)[0]
fig = comparison_figure(shown[s0][0], {"Takagi & Nishimoto": shown[s0][1]}, cfg.reconstruction.n_figure,
                        f"Takagi & Nishimoto (ridge), subject {s0}")
save_figure(fig, FIG / "reconstructions.png")
save_json(cfg.path("metrics") / "methods" / "takagi.json",
          {"subjects": record, "minutes": round((time.time() - T0) / 60, 2)})
