"""fMRI calibrated encoding (Sec. 3.1): a guide-token masked autoencoder over flatmaps.

The encoder E is a ViT over the whole 1-channel flatmap S (n, H, W): P = (H / patch)^2 patch
tokens plus one learned *guide token* in front. Unlike MAE's random masking, the decoder sees
*no* patch tokens: only the encoder's guide-token output and one learned mask token per patch
position, so the guide token has to carry the whole map. After pretraining the decoder is
dropped and the encoder's output is the fMRI latent S^r = E(S) (Eq. 1):

    output="full"  ->  S^r (n, 1 + P, width)   guide token + patch tokens
    output="cls"   ->  S^r (n, 1, width)       guide ([CLS]) token only (Table 2 ablation)

Pixels off cortex (the flatmap's validity mask) are zeroed on the way in and ignored by
`mae_loss` and `recon_correlation`. Checkpoint: `save_encoder` / `load_encoder`, a folder with
`model.safetensors` + `config.json`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..io import DataError, atomic_dir, read_safetensors

OUTPUTS = ("full", "cls")
_MISSING_FIX = "It is written by the encoder-pretraining stage: run `dvc repro encoder`."


@dataclass(frozen=True)
class EncoderSpec:
    image_size: int = 64  # flatmap side; the paper's maps are 256
    patch: int = 8  # 8 x 8 patches -> 64 patch tokens on a 64 x 64 map
    width: int = 128  # d_r, the latent's feature size
    depth: int = 4
    heads: int = 4
    decoder_width: int = 96  # the decoder is thrown away, so it is kept narrower
    decoder_depth: int = 2
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch {self.patch}")
        for name in ("width", "decoder_width"):
            value = getattr(self, name)
            # 2-D sin-cos embeddings split the dim into (x, y) x (sin, cos)
            if value % 4 or value % self.heads:
                raise ValueError(f"{name} {value} must be a multiple of 4 and of heads {self.heads}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid ** 2


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embeddings, (grid * grid, dim), row-major like the patches."""
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        angle = coord[:, None] * freq[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


def _blocks(width: int, depth: int, spec: EncoderSpec) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, spec.heads, int(width * spec.mlp_ratio), dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class FlatmapMAE(nn.Module):
    """Guide-token MAE: maps (n, H, W) -> encoder tokens -> guide token -> maps (n, H, W)."""

    def __init__(self, spec: EncoderSpec, mask: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        size = (spec.image_size, spec.image_size)
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool)
            if tuple(mask.shape) != size:
                raise ValueError(f"validity mask has shape {tuple(mask.shape)}, expected {size} "
                                 f"(EncoderSpec.image_size = {spec.image_size})")
        self.register_buffer("mask", mask)  # (H, W) bool, or None: every pixel valid
        # encoder E
        self.patch_embed = nn.Conv2d(1, spec.width, spec.patch, stride=spec.patch)
        self.guide_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.register_buffer("pos_embed", sincos_2d(spec.grid, spec.width)[None])
        self.encoder = _blocks(spec.width, spec.depth, spec)
        self.encoder_norm = nn.LayerNorm(spec.width)
        # decoder: guide token + one mask token per patch position -> pixels
        self.decoder_embed = nn.Linear(spec.width, spec.decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.decoder_width))
        self.register_buffer("decoder_pos_embed", sincos_2d(spec.grid, spec.decoder_width)[None])
        self.decoder = _blocks(spec.decoder_width, spec.decoder_depth, spec)
        self.decoder_norm = nn.LayerNorm(spec.decoder_width)
        self.decoder_head = nn.Linear(spec.decoder_width, spec.patch ** 2)
        self.gradient_checkpointing = False  # encode: recompute each layer's activations in backward
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier uniform on every linear map (the paper's "random init" row), as in MAE;
        # the patch embedding is a linear map of flattened patches, so it gets the same.
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.spec.width, -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.guide_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
                nn.init.xavier_uniform_(m.in_proj_weight)

    @property
    def width(self) -> int:
        """d_r, the feature size of S^r."""
        return self.spec.width

    def tokens(self, output: str = "full") -> int:
        """L_r, the number of tokens `encode(..., output)` returns (for sizing HLGN / LLMN)."""
        _check_output(output)
        return 1 + self.spec.num_patches if output == "full" else 1

    def _prepare(self, maps: torch.Tensor) -> torch.Tensor:
        """(n, H, W) or (n, 1, H, W) -> (n, 1, H, W), off-cortex pixels zeroed."""
        if maps.dim() == 3:
            maps = maps[:, None]
        s = self.spec.image_size
        if maps.dim() != 4 or maps.shape[1] != 1 or tuple(maps.shape[-2:]) != (s, s):
            raise ValueError(f"flatmaps must be (n, {s}, {s}) or (n, 1, {s}, {s}); got {tuple(maps.shape)}. "
                             f"The encoder was built for EncoderSpec.image_size = {s}.")
        maps = maps.to(self.pos_embed.dtype)
        return maps * self.mask if self.mask is not None else maps

    def freeze_decoder(self) -> "FlatmapMAE":
        """Stop training the parts only pretraining uses (mask token, decoder): downstream
        they get no gradient, which DDP would otherwise wait for."""
        for part in (self.mask_token, self.decoder_embed, self.decoder, self.decoder_norm, self.decoder_head):
            part.requires_grad_(False)
        return self

    def encode(self, maps: torch.Tensor, output: str = "full") -> torch.Tensor:
        """S^r = E(S) (Eq. 1): (n, 1 + P, width) for "full", (n, 1, width) for "cls"."""
        _check_output(output)
        x = self.patch_embed(self._prepare(maps)).flatten(2).transpose(1, 2) + self.pos_embed
        x = torch.cat([self.guide_token.expand(len(x), -1, -1), x], dim=1)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            for layer in self.encoder.layers:
                x = checkpoint(layer, x, use_reentrant=False)
        else:
            x = self.encoder(x)
        x = self.encoder_norm(x)
        return x if output == "full" else x[:, :1]

    def decode(self, guide: torch.Tensor) -> torch.Tensor:
        """Guide token (n, width) -> reconstructed maps (n, H, W); off-cortex pixels are 0."""
        s, p, g = self.spec, self.spec.patch, self.spec.grid
        n = len(guide)
        # all patches masked: the mask tokens differ only by position, so the map must come from the guide
        masked = (self.mask_token + self.decoder_pos_embed).expand(n, -1, -1)
        x = torch.cat([self.decoder_embed(guide)[:, None], masked], dim=1)
        x = self.decoder_head(self.decoder_norm(self.decoder(x)))[:, 1:]  # (n, P, p * p)
        maps = x.reshape(n, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(n, s.image_size, s.image_size)
        return maps * self.mask if self.mask is not None else maps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps (n, H, W) -> reconstruction (n, H, W), through the guide token alone."""
        return self.decode(self.encode(maps, "full")[:, 0])


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def mae_loss(model: FlatmapMAE, batch: tuple[torch.Tensor]) -> torch.Tensor:
    """MSE of the reconstruction over valid (on-cortex) pixels; `batch` is `(maps,)`, (n, H, W)."""
    core = getattr(model, "module", model)  # unwrapped under DDP
    maps = core._prepare(batch[0])[:, 0]
    err = (model(maps) - maps) ** 2
    mask = core.mask
    if mask is None:
        return err.mean()
    return err[:, mask].mean()


def recon_correlation(pred, target, mask=None) -> np.ndarray:
    """Per-map Pearson r over valid pixels: (n, H, W), (n, H, W), (H, W) bool -> (n,)."""
    pred = np.asarray(pred.detach().cpu() if torch.is_tensor(pred) else pred, dtype=np.float64)
    target = np.asarray(target.detach().cpu() if torch.is_tensor(target) else target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    n = len(pred)
    if mask is None:
        x, y = pred.reshape(n, -1), target.reshape(n, -1)
    else:
        mask = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask, dtype=bool)
        x, y = pred[:, mask], target[:, mask]
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))


SPLIT_HALF_KEYS = ("split-half r(A, B)", "r(recon(A), B)", "r(recon(A), A)")


def split_half_readout(rebuild, halves, mask=None) -> dict[str, np.ndarray]:
    """How much of a task map's repeatable signal an encoder keeps. `halves` (n, 2, H, W): each
    image's maps averaged over two disjoint sets of its repeats (A, B); `rebuild(maps) -> maps`.
    Per map: split-half r(A, B) (what repeats at all), r(rebuild(A), B) (what of it the rebuild
    of A carries) and r(rebuild(A), A) (the plain reconstruction r), over `mask`'s pixels."""
    halves = np.asarray(halves, dtype=np.float32)
    if halves.ndim != 4 or halves.shape[1] != 2:
        raise ValueError(f"halves must be (n, 2, H, W); got {halves.shape}")
    a, b = halves[:, 0], halves[:, 1]
    rebuilt = rebuild(a)
    return dict(zip(SPLIT_HALF_KEYS, (recon_correlation(a, b, mask), recon_correlation(rebuilt, b, mask),
                                      recon_correlation(rebuilt, a, mask))))


def summarise_split_half(parts: list[dict[str, np.ndarray]]) -> dict:
    """Medians over every map of `parts` (split_half_readout's, e.g. one per subject), and the
    share of the repeatable signal kept: median r(recon(A), B) / median split-half r(A, B)."""
    if not parts:
        return {}
    med = {k: float(np.median(np.concatenate([p[k] for p in parts]))) for k in SPLIT_HALF_KEYS}
    split = med["split-half r(A, B)"]
    return {**{f"median {k}": v for k, v in med.items()}, "n": int(sum(len(p[SPLIT_HALF_KEYS[0]]) for p in parts)),
            "share of the repeatable signal kept": med["r(recon(A), B)"] / split if split > 0 else None}


def save_encoder(path: str | Path, model: FlatmapMAE, spec: EncoderSpec | None = None) -> None:
    """Write `path/` = model.safetensors (weights, and the validity mask if any) + config.json."""
    if spec is not None and spec != model.spec:
        raise ValueError(f"spec {spec} does not match the model's {model.spec}")
    spec = model.spec
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(
            {"spec": dataclasses.asdict(spec), "has_mask": model.mask is not None}, indent=2) + "\n")


def load_encoder(path: str | Path) -> FlatmapMAE:
    """Read a folder written by `save_encoder` -> FlatmapMAE in eval mode (on CPU)."""
    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).exists():
            raise DataError(f"Missing fMRI encoder: expected {path / name}. {_MISSING_FIX}")
    try:
        config = json.loads((path / "config.json").read_text())
        spec = EncoderSpec(**config["spec"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path / 'config.json'} is not a readable encoder config ({err}). {_MISSING_FIX}") from err
    size = (spec.image_size, spec.image_size)
    # placeholder mask of the right shape; load_state_dict fills in the stored one
    model = FlatmapMAE(spec, torch.ones(size, dtype=torch.bool) if config.get("has_mask") else None)
    try:
        model.load_state_dict(read_safetensors(path / "model.safetensors", _MISSING_FIX))
    except RuntimeError as err:
        raise DataError(f"{path / 'model.safetensors'} does not match its config.json: {str(err)[:300]}. "
                        f"{_MISSING_FIX}") from err
    return model.eval()
