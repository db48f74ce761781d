"""What every voxel-based method shares: one subject's data and decoding targets, the
decoder-fitting loop, the decoded features, and where reconstructions are kept.

    data = subject_data(cfg, prepared, subject)             # voxels, stimuli, targets (from paths.features)
    decoded = takagi.fit_decode(cfg, data)                   # Decoded(z=..., c=...)
    images = draw(found, decoded, cfg)                       # the shared sampler
    save_reconstructions(cfg, "takagi", subject, data.ids_test, images, decoded)

A method never edits another's file; Table 1 reads every method's reconstructions back from
`paths.reconstructions/<method>/subjXX.npz` (notebook 07).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import DecoderFit, Settings
from ..io import DataError, atomic_path

# Table 1's row names, in the table's order
ROW_NAMES = {
    "takagi": "Takagi & Nishimoto (ridge)",
    "brain_diffuser": "Brain-Diffuser-style (ridge -> hVAE)",
    "cs292f": "CS292F (nonlinear decoders)",
    "gru": "Two-stage GRU",
    "neuraldiffuser": "NeuralDiffuser (ridge z, c, g + guidance)",
    "neuropictor_wo_ft": "NeuroPictor (w/o ft)",
    "neuropictor": "NeuroPictor",
}
# the same methods drawn again with NeuralDiffuser's feature guidance (`<method>_guided/`)
ROW_NAMES.update({f"{m}_guided": f"{ROW_NAMES[m]} + guidance"
                  for m in ("takagi", "brain_diffuser", "cs292f", "gru", "neuropictor")})
EARLY_VISUAL = ("V1", "V2", "V3", "hV4")


# --------------------------------------------------------------------------- data and targets
@dataclass
class SubjectData:
    """One subject's training and test split with the decoding targets (rows aligned).

    z: the foundation VAE's scaled latents of the stimuli; c: the text tower's caption states
    (None without captions: the text branches are off); the hierarchical VAE's latent groups
    are encoded on first use (`hvae_latents`)."""

    subject: int | str
    ids_train: np.ndarray
    ids_test: np.ndarray
    x_train: np.ndarray  # (n, n_voxels) float32
    x_test: np.ndarray
    images_train: object  # (n, 3, H, W) in [0, 1]: a tensor, or `StreamedImages` (read in batches)
    images_test: torch.Tensor
    z_train: torch.Tensor  # (n, 4, h, w)
    z_test: torch.Tensor
    c_train: torch.Tensor | None  # (n, L_T, d_T)
    c_test: torch.Tensor | None
    info: pd.DataFrame | None  # one row per voxel: visual_roi, stream (None: no ROI labels)
    hvae: nn.Module | None = None
    _hvae_cache: dict = field(default_factory=dict, repr=False)

    @property
    def text(self) -> bool:
        return self.c_train is not None

    def roi_columns(self, rois) -> np.ndarray:
        """Voxel columns whose `visual_roi` is in `rois`."""
        if self.info is None:
            raise DataError(f"subject {self.subject}: no ROI labels (voxel_info.csv); this decoder needs them.")
        return np.flatnonzero(self.info.visual_roi.isin(rois).to_numpy())

    def higher_columns(self) -> np.ndarray:
        """Voxel columns of the higher ventral stream (NSD streams 'ventral'); all voxels
        outside early visual cortex where no stream label says so."""
        if self.info is None:
            raise DataError(f"subject {self.subject}: no ROI labels (voxel_info.csv); this decoder needs them.")
        cols = np.flatnonzero(self.info.stream.isin(("ventral", "midventral")).to_numpy()
                              & ~self.info.visual_roi.isin(EARLY_VISUAL).to_numpy())
        return cols if cols.size else np.flatnonzero(~self.info.visual_roi.isin(EARLY_VISUAL).to_numpy())

    def hvae_latents(self, split: str, groups: int) -> torch.Tensor:
        """The hierarchical VAE's posterior means of the first `groups` groups, flattened (n, d)."""
        if self.hvae is None:
            raise DataError("no hierarchical VAE loaded (foundation/weights/hvae); the GRU and Brain-Diffuser "
                            "methods need it.")
        if split not in self._hvae_cache:
            images = self.images_train if split == "train" else self.images_test
            groups_of = [[z.flatten(1) for z in self.hvae.encode(2 * batch - 1)] for batch in _batches(images)]
            self._hvae_cache[split] = [torch.cat(g) for g in zip(*groups_of)]
        return torch.cat(self._hvae_cache[split][:groups], 1)

    def hvae_decode(self, flat: torch.Tensor, groups: int) -> torch.Tensor:
        """Flattened first `groups` groups (n, d) -> coarse images (n, 3, H, W) in [0, 1]
        (the remaining groups from the prior's mean)."""
        shapes = self.hvae.group_shapes()[:groups]
        zs, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            zs.append(flat[:, start:start + size].reshape(len(flat), *shape).float())
            start += size
        with torch.no_grad():
            return (self.hvae.decode(zs) / 2 + 0.5).clamp(0, 1)


class StreamedImages:
    """A split's stimuli read from the prepared memmap in batches, never all at once (NSD:
    9,000 training images per subject)."""

    def __init__(self, prepared, ids: np.ndarray, batch: int = 256):
        self.prepared, self.ids, self.batch = prepared, ids, batch

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        from ..models.foundation import images_of

        for s in range(0, len(self.ids), self.batch):
            yield images_of(self.prepared, self.ids[s:s + self.batch])


def _batches(images, batch: int = 256):
    if isinstance(images, StreamedImages):
        yield from images
    else:
        for s in range(0, len(images), batch):
            yield images[s:s + batch]


def load_hvae_of(cfg: Settings):
    """The world's hierarchical VAE: the shipped one (synthetic world, and your own scans at
    64 px); the paper world would need VDVAE weights in this format under paths.weights/hvae."""
    from ..models.hvae import load_hvae

    root = cfg.path("weights") / "hvae" if cfg.world == "nsd" else cfg.path("foundation") / "hvae"
    if not (root / "config.json").exists():
        raise DataError(f"{root}/config.json not found: the hierarchical VAE the GRU and Brain-Diffuser methods "
                        "decode into. Synthetic world: `git checkout -- foundation/weights`; paper world: "
                        "convert a VDVAE checkpoint to this format there.")
    return load_hvae(root)


def subject_data(cfg: Settings, prepared, subject, hvae=None) -> SubjectData:
    """Voxels and targets of one subject (test rows: the shared images). The targets z and c
    are read from the features stage's arrays (`paths.features`), not recomputed."""
    from ..features import FeatureStore
    from ..models.foundation import images_of

    train, test = prepared.rows(subject, "train"), prepared.rows(subject, "test")
    ids_train, ids_test = train.nsd_id.to_numpy(), test.nsd_id.to_numpy()
    images_train, images_test = StreamedImages(prepared, ids_train), images_of(prepared, ids_test)
    store = FeatureStore(cfg.path("features"))
    z_train, z_test = store.latents(ids_train), store.latents(ids_test)
    c_train, c_test = store.states(ids_train), store.states(ids_test)
    try:
        info = prepared.voxel_info(subject)
    except DataError:
        info = None
    return SubjectData(subject, ids_train, ids_test, np.asarray(prepared.voxels(subject, "train"), np.float32),
                       np.asarray(prepared.voxels(subject, "test"), np.float32), images_train, images_test,
                       z_train, z_test, c_train, c_test, info, hvae)


# --------------------------------------------------------------------------- decoders
class Standardizer:
    """Per-column z-scoring of a target fitted on the training rows (decoders learn unit-scale targets)."""

    def __init__(self, y: torch.Tensor):
        flat = y.flatten(1).float()
        self.shape = y.shape[1:]
        self.mean, self.sd = flat.mean(0), flat.std(0).clamp_min(1e-6)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return (y.flatten(1).float() - self.mean) / self.sd

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.sd + self.mean).reshape(len(y), *self.shape)


def validation_rows(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row split of the training set, for early stopping."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * share)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """R^2 of predictions over all numbers of the targets, against the targets' mean row."""
    pred, target = pred.flatten(1).double(), target.flatten(1).double()
    return float(1 - (pred - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def mse_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def fit_decoder(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fit: DecoderFit, seed: int,
                val_share: float, loss_fn=mse_loss, desc: str = "") -> tuple[nn.Module, dict]:
    """Adam on `loss_fn` for up to `fit.epochs` epochs with early stopping (patience
    `fit.patience`) on a held-out share of the rows; returns the best-validation weights and
    the learning curve. accelerate places the model on params' `compute.device` and runs it
    at `compute.precision` (`compute.configure`)."""
    from ..compute import accelerator

    torch.manual_seed(seed)
    acc = accelerator()
    tr, va = validation_rows(len(x), val_share, seed)
    opt = torch.optim.Adam(model.parameters(), lr=fit.lr)
    model, opt = acc.prepare(model, opt)
    device = acc.device
    xt, yt = x[tr].to(device), y[tr].to(device)
    xv, yv = x[va].to(device), y[va].to(device)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, waited, curve = float("inf"), None, 0, []
    for epoch in range(fit.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(order), fit.batch_size):
            rows = order[s:s + fit.batch_size]
            if len(rows) < 2:  # BatchNorm needs two rows
                continue
            opt.zero_grad(set_to_none=True)
            with acc.autocast():
                loss = loss_fn(model, xt[rows], yt[rows])
            acc.backward(loss)
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(nn.functional.mse_loss(predict(model, xv), yv))
        curve.append(val)
        if val < best - 1e-6:
            best, best_state, waited = val, copy.deepcopy(acc.unwrap_model(model).state_dict()), 0
        else:
            waited += 1
            if waited >= fit.patience:
                break
    if best_state is None:
        raise FloatingPointError(f"{desc or type(model).__name__}: the validation loss was never finite "
                                 f"({curve[:3]}...); lower the learning rate ({fit.lr}) or check the inputs for NaN.")
    model = acc.unwrap_model(model)
    model.load_state_dict(best_state)
    return model.cpu().eval(), {"epochs": len(curve), "best_val_mse": best, "val_curve": curve, "name": desc}


def predict(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Model outputs in eval mode (`model.predict` where the decoder has one, e.g. a VAE's mean)."""
    fn = getattr(model, "predict", model)
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([fn(x[s:s + batch].to(device)).cpu() for s in range(0, len(x), batch)])


def ridge_fit_predict(x_train: np.ndarray, y_train: torch.Tensor, x_test: np.ndarray, alphas) -> torch.Tensor:
    """Ridge with its penalty picked by efficient leave-one-out (RidgeCV): Takagi & Nishimoto's
    and Brain-Diffuser's linear map, for any target (n, ...)."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.asarray(alphas, float)).fit(x_train, y_train.flatten(1).numpy())
    return torch.from_numpy(model.predict(x_test)).float().reshape(len(x_test), *y_train.shape[1:])


# --------------------------------------------------------------------------- decoded features -> images
@dataclass
class Decoded:
    """What a method hands the shared sampler for the test scans: a starting latent z or a
    coarse image (stage 1), and the text condition c (None: text branches off)."""

    z: torch.Tensor | None = None  # (n, 4, h, w) VAE-scaled latents
    coarse: torch.Tensor | None = None  # (n, 3, H, W) in [0, 1]
    c: torch.Tensor | None = None  # (n, L_T, d_T)
    extra: dict = field(default_factory=dict)  # method-specific records (learning curves, ...)


def start_latents(found, decoded: Decoded) -> torch.Tensor:
    """Where stage 2 starts: the decoded latent, or the coarse image VAE-encoded."""
    from ..models.foundation import image_latents

    return decoded.z if decoded.coarse is None else image_latents(found.pipe.vae, decoded.coarse)


def draw(found, decoded: Decoded, cfg: Settings, strength: float, seed: int | None = None, guide=None) -> torch.Tensor:
    """The shared sampler: stage 1's latent (or the coarse image, VAE-encoded) refined by
    img2img at `strength` (the method's `methods.<name>.strength`) conditioned on the decoded
    text states with classifier-free guidance, and `guide` (a `sample.Guide`: NeuralDiffuser's
    feature guidance) if given. Without text states there is no stage 2: the stage-1 image
    is the result."""
    from ..evaluation import sampling_steps
    from ..sample import decode, img2img

    if decoded.c is None:
        return decoded.coarse if decoded.coarse is not None else decode(found.pipe.vae, decoded.z)
    return img2img(found.pipe, start_latents(found, decoded), decoded.c, strength=strength,
                   steps=sampling_steps(cfg), guidance=cfg.reconstruction.guidance,
                   seed=cfg.seed if seed is None else seed, guide=guide)


def method_dir(cfg: Settings, method: str) -> Path:
    return cfg.path("reconstructions") / method


def subject_file(cfg: Settings, method: str, subject) -> Path:
    name = f"subj{int(subject):02d}" if str(subject).isdigit() else str(subject)
    return method_dir(cfg, method) / f"{name}.npz"


def save_reconstructions(cfg: Settings, method: str, subject, nsd_ids: np.ndarray, images: torch.Tensor,
                         c: torch.Tensor | None = None, z: torch.Tensor | None = None) -> Path:
    """Write `<reconstructions>/<method>/subjXX.npz`: nsd_id, images (n, H, W, 3) uint8, the
    decoded text condition c and the latent stage 2 started from, z (float32), where the
    method has them (NeuralDiffuser's "+ guidance" rows redraw from both). Atomic."""
    path = subject_file(cfg, method, subject)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"nsd_id": np.asarray(nsd_ids),
              "images": (images.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)}
    if c is not None:
        arrays["c"] = c.half().numpy()
    if z is not None:
        arrays["z"] = z.float().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_reconstructions(cfg: Settings, method: str, subject) -> dict:
    """-> {"nsd_id", "images" (n, 3, H, W) float in [0, 1], "c" or None, "z" or None}."""
    path = subject_file(cfg, method, subject)
    if not path.exists():
        raise DataError(f"{path} not found: method '{method}' has not drawn subject {subject}. "
                        f"Run `dvc repro` (its stage writes {path.parent}).")
    with np.load(path) as f:
        out = {"nsd_id": f["nsd_id"], "images": torch.from_numpy(f["images"]).permute(0, 3, 1, 2).float() / 255,
               "c": torch.from_numpy(f["c"]).float() if "c" in f.files else None,
               "z": torch.from_numpy(f["z"]) if "z" in f.files else None}
    return out


def method_subjects(cfg: Settings) -> list:
    """Subjects every method decodes: the refined subjects (1, 2, 5, 7), or your own file's."""
    if cfg.world == "generic":
        from ..data.generic import SUBJECT

        return [SUBJECT]
    return list(cfg.neuropictor.refine_subjects)


def comparison_figure(stimuli: torch.Tensor, rows: dict[str, torch.Tensor], n: int, title: str):
    """Stimuli on top, one row of images per entry of `rows` (the first n test images)."""
    import matplotlib.pyplot as plt

    n = min(n, len(stimuli))
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(1.3 * n, 1.4 * (1 + len(rows))), squeeze=False)
    for r, (label, imgs) in enumerate([("stimulus", stimuli)] + list(rows.items())):
        for i in range(n):
            axes[r, i].imshow(imgs[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r, i].set_xticks([]), axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(label.replace(" (", "\n("), fontsize=7)
    fig.suptitle(title)
    return fig
