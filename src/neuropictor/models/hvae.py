"""A small hierarchical VAE in the style of VDVAE (Child 2021): a bottom-up encoder and a
top-down decoder that draws groups of latents at several resolutions, each group's prior
conditioned on the groups above it.

It plays VDVAE's role for the two-stage GRU decoder and the Brain-Diffuser-style baseline:
they predict the *first k groups* (coarse layout and colour) from fMRI, and the decoder
fills in the rest from its prior. VDVAE-ImageNet-64 has 75 groups and those papers use the
first 31 (GRU paper: 15 vs 31); here the groups per resolution are `groups` (default
1x1: 2, 4x4: 4, 8x8: 8, 16x16: 17, i.e. 31), a 16 x 16 top-down path, then plain
upsampling blocks to the image.

    hvae = HierarchicalVAE(HVAESpec())
    zs = hvae.encode(x)                 # list of 31 tensors (n, z_dim, r, r): posterior means
    x15 = hvae.decode(zs[:15])          # the first 15 groups, the rest from the prior (means)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HVAESpec:
    image_size: int = 64
    resolutions: tuple[int, ...] = (1, 4, 8, 16)  # top-down order
    groups: tuple[int, ...] = (2, 4, 8, 17)  # latent groups at each resolution
    width: int = 64  # channels of the top-down path (<= 16 x 16)
    pixel_width: int = 32  # channels of the full-resolution blocks (32, 64 px)
    z_dim: int = 8  # channels of one latent group
    sigma: float = 0.1  # std of the Gaussian likelihood (images in [-1, 1])
    extra: dict = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return sum(self.groups)


class ResBlock(nn.Module):
    """VDVAE's bottleneck residual block (1x1 -> 3x3 -> 3x3 -> 1x1, GELU)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int | None = None, residual: bool = True, zero_last: bool = False):
        super().__init__()
        c_out = c_out or c_in
        self.residual = residual and c_in == c_out
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_mid, 1), nn.Conv2d(c_mid, c_mid, 3, padding=1),
                                    nn.Conv2d(c_mid, c_mid, 3, padding=1), nn.Conv2d(c_mid, c_out, 1)])
        if zero_last:
            nn.init.zeros_(self.convs[-1].weight)
            nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = conv(F.gelu(h))
        return x + h if self.residual else h


class TopDownGroup(nn.Module):
    """One latent group: prior p(z | h), posterior q(z | h, encoder activation), h += f(z)."""

    def __init__(self, width: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.prior = ResBlock(width, width // 4, 2 * z_dim + width, residual=False, zero_last=True)
        self.posterior = ResBlock(2 * width, width // 4, 2 * z_dim, residual=False)
        self.z_proj = nn.Conv2d(z_dim, width, 1)
        self.block = ResBlock(width, width // 4)

    def forward(self, h, enc=None, z=None, temperature: float = 0.0, generator=None):
        """Returns (new h, z used, KL per image or None). With `enc` (training/encoding) z is
        drawn from the posterior; with `z` given it is used; otherwise the prior's mean plus
        `temperature` times its std of noise."""
        p = self.prior(h)
        pm, plogs, h_extra = p[:, :self.z_dim], p[:, self.z_dim:2 * self.z_dim], p[:, 2 * self.z_dim:]
        kl = None
        if enc is not None:
            q = self.posterior(torch.cat([h, enc], 1))
            qm, qlogs = q[:, :self.z_dim], q[:, self.z_dim:]
            z = qm + torch.exp(qlogs) * torch.randn_like(qm) if self.training else qm
            kl = (plogs - qlogs + (torch.exp(2 * qlogs) + (qm - pm) ** 2) / (2 * torch.exp(2 * plogs)) - 0.5)
            kl = kl.flatten(1).sum(1)
        elif z is None:
            noise = torch.randn(pm.shape, generator=generator, device=pm.device) if temperature else 0.0
            z = pm + temperature * torch.exp(plogs) * noise
        h = h + h_extra + self.z_proj(z)
        return self.block(h), z, kl


class HierarchicalVAE(nn.Module):
    """Images (n, 3, S, S) in [-1, 1]."""

    def __init__(self, spec: HVAESpec):
        super().__init__()
        if spec.image_size % spec.resolutions[-1] or len(spec.groups) != len(spec.resolutions):
            raise ValueError(f"HVAESpec: resolutions {spec.resolutions} and groups {spec.groups} must pair up, "
                             f"and the image size {spec.image_size} must be a multiple of the finest resolution")
        self.spec = s = spec
        w, pw = s.width, s.pixel_width
        # bottom-up: image -> ... -> finest latent resolution -> coarser ones
        self.stem = nn.Conv2d(3, pw, 3, padding=1)
        self.enc_pixel = nn.ModuleList()
        size, c = s.image_size, pw
        while size > s.resolutions[-1]:
            self.enc_pixel.append(nn.Sequential(ResBlock(c, c // 2 if c > 16 else c), nn.Conv2d(c, w if size // 2 == s.resolutions[-1] else c, 1)))
            c = w if size // 2 == s.resolutions[-1] else c
            size //= 2
        if not self.enc_pixel:
            self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.enc_blocks = nn.ModuleList([ResBlock(w, w // 4) for _ in s.resolutions])
        # top-down
        self.h0 = nn.Parameter(torch.zeros(1, w, s.resolutions[0], s.resolutions[0]))
        self.groups = nn.ModuleList([TopDownGroup(w, s.z_dim) for _ in range(s.n_groups)])
        self.dec_pixel = nn.ModuleList()
        size, c = s.resolutions[-1], w
        while size < s.image_size:
            self.dec_pixel.append(nn.Sequential(nn.Conv2d(c, pw, 1), ResBlock(pw, pw // 2)))
            c, size = pw, size * 2
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    # ------------------------------------------------------------------ parts
    def _bottom_up(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.stem(x)
        for block in self.enc_pixel:
            h = F.avg_pool2d(block(h), 2)
        acts = {}
        for r, block in zip(reversed(self.spec.resolutions), reversed(self.enc_blocks)):
            if h.shape[-1] != r:
                h = F.adaptive_avg_pool2d(h, r)
            h = block(h)
            acts[r] = h
        return acts

    def _top_down(self, n: int, acts=None, zs=None, temperature=0.0, generator=None):
        h = self.h0.expand(n, -1, -1, -1)
        out_z, kls, g = [], [], 0
        for r, count in zip(self.spec.resolutions, self.spec.groups):
            if h.shape[-1] != r:
                h = F.interpolate(h, size=(r, r), mode="nearest")
            for _ in range(count):
                given = zs[g] if zs is not None and g < len(zs) else None
                enc = acts[r] if acts is not None else None
                h, z, kl = self.groups[g](h, enc=enc, z=given, temperature=temperature, generator=generator)
                out_z.append(z)
                if kl is not None:
                    kls.append(kl)
                g += 1
        for block in self.dec_pixel:
            h = block(F.interpolate(h, scale_factor=2, mode="nearest"))
        return torch.tanh(self.out(h)), out_z, kls

    # ------------------------------------------------------------------ API
    def forward(self, x: torch.Tensor):
        """Training pass: (reconstruction, KL per image summed over groups)."""
        rec, _, kls = self._top_down(len(x), acts=self._bottom_up(x))
        return rec, torch.stack(kls, 1).sum(1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Posterior means of every group, top-down order: a list of (n, z_dim, r, r)."""
        was = self.training
        self.eval()
        _, zs, _ = self._top_down(len(x), acts=self._bottom_up(x))
        self.train(was)
        return zs

    def decode(self, zs: list[torch.Tensor], temperature: float = 0.0, generator=None) -> torch.Tensor:
        """The first `len(zs)` groups given, the rest from the prior (its mean, plus
        `temperature` x its std of noise) -> images (n, 3, S, S) in [-1, 1]."""
        if not zs:
            raise ValueError("decode needs at least the first latent group")
        if len(zs) > self.spec.n_groups:
            raise ValueError(f"{len(zs)} latent groups given; this VAE has {self.spec.n_groups}")
        return self._top_down(len(zs[0]), zs=zs, temperature=temperature, generator=generator)[0]

    def group_shapes(self) -> list[tuple[int, int, int]]:
        return [(self.spec.z_dim, r, r) for r, count in zip(self.spec.resolutions, self.spec.groups) for _ in range(count)]


def hvae_loss(model: HierarchicalVAE, batch) -> torch.Tensor:
    """Negative ELBO per pixel value: Gaussian likelihood (std `sigma`) + KL."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    rec, kl = model(x)
    nll = ((rec - x) ** 2).flatten(1).sum(1) / (2 * model.spec.sigma ** 2)
    return (nll + kl).mean() / x[0].numel()


def save_hvae(path, model: HierarchicalVAE) -> None:
    import dataclasses
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from ..io import atomic_dir

    with atomic_dir(Path(path)) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(model.spec), indent=1))


def load_hvae(path) -> HierarchicalVAE:
    import json
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..io import DataError

    path = Path(path)
    try:
        spec = json.loads((path / "config.json").read_text())
        spec = HVAESpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        model = HierarchicalVAE(spec)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as e:
        raise DataError(f"{path}: not a readable hierarchical VAE ({e}). Re-run `make foundation` "
                        "or restore the shipped files with `git checkout -- foundation/weights`.") from e
    return model.eval()
