"""Decoding methods, one file each: fit on a subject's training split, decode its test split
into what the shared sampler needs (a latent or a coarse image, and text states).

| file                | Table 1 row                        | stage 1 (voxels ->)                         | stage 2              |
|---------------------|------------------------------------|---------------------------------------------|----------------------|
| `takagi.py`         | Takagi & Nishimoto (ridge)         | ridge -> VAE latent z, ridge -> text c      | img2img from z       |
| `brain_diffuser.py` | Brain-Diffuser-style               | ridge -> 31 hierarchical-VAE groups, ridge c| img2img from coarse  |
| `cs292f.py`         | CS292F (nonlinear decoders)        | CNN / VAE / ChebNet GCN -> z, 1-D CNN -> c  | img2img from z       |
| `gru.py`            | Two-stage GRU                      | bidirectional GRU -> 15 groups, ridge c     | img2img from coarse  |
| `neuraldiffuser.py` | NeuralDiffuser                     | ridge -> z, c and CLIP layer features g     | img2img + guidance   |

NeuroPictor (flatmaps, not voxels) is sampled by notebook 05; every method's
reconstructions land in `paths.reconstructions/<method>/` and notebook 07 scores them all.
Notebook 05_neuraldiffuser also redraws every method with the feature guidance
(`<method>_guided/`, the "+ guidance" rows).
"""
from .base import (ROW_NAMES, Decoded, SubjectData, comparison_figure, draw, load_hvae_of,  # noqa: F401
                   load_reconstructions, method_subjects, r2_score, save_reconstructions, start_latents,
                   subject_data)
