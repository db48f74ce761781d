"""One sampler for every method: DDIM with classifier-free guidance, NeuroPictor's control
scale, img2img strength, and a gradient-guidance hook on the first share of the reverse steps
(NeuralDiffuser's primary visual feature guidance, `methods/neuraldiffuser.py`).

    latents = reconstruct(model, scheduler, maps, steps=25, guidance=5.0, alpha=1.0)  # NeuroPictor
    images = img2img(pipe, z, c, strength=0.75, steps=25, guidance=5.0, seed=0)        # voxel methods
    images = img2img(..., guide=Guide(loss, scale=kappa, share=0.2))                   # + guidance
    images = decode(vae, latents)          # (n, 3, H, W) in [0, 1]

Both entry points run `denoise`: all initial noise from one seeded generator (whatever the
batch size), the diffusers scheduler's own `add_noise` / `step`, and the steps diffusers'
img2img pipeline runs for a strength (`int(steps * strength)` of them, the last ones). With no
guide, `img2img` gives what diffusers' `StableDiffusionImg2ImgPipeline` gives (tested).

Guidance (a `Guide`): on the first `ceil(share * steps run)` reverse steps the denoiser's
prediction is moved so that its clean-latent estimate x0_hat descends `loss`:
eps' = eps + sqrt(1 - alpha_bar_t) * scale * d loss(x0_hat(x_t)) / d x_t, i.e. classifier
guidance with log p(g | x_t) = -scale * loss (NeuralDiffuser writes it as eps - sqrt(1 -
alpha_bar_t) * grad of the similarity). The gradient treats the denoiser's output as fixed
(x0_hat is then linear in x_t: no backward pass through the UNet, as manifold-preserving
guidance does); NeuralDiffuser's released code also differentiates the UNet. A step at
alpha_bar_t = 0 (zero-SNR's first) carries no information on x0 and is left unguided.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm


@dataclass
class Guide:
    """Gradient guidance. loss(x0_hat, rows) -> per-row loss (b,): x0_hat are the
    scheduler-space clean-latent estimates (b, c, h, w) of the rows `rows` (a slice of the
    whole set); scale: kappa (0 = no guidance, exactly); share: eta, the first share of the
    reverse steps run that are guided."""

    loss: Callable[[torch.Tensor, slice], torch.Tensor]
    scale: float
    share: float = 0.2

    def steps(self, n_steps: int) -> int:
        if self.scale == 0 or self.share <= 0:
            return 0
        return min(n_steps, math.ceil(self.share * n_steps - 1e-9))


def clean_estimate(scheduler, x: torch.Tensor, out: torch.Tensor, t) -> torch.Tensor:
    """x0_hat of the scheduler's prediction type from x_t and the denoiser's output."""
    a = scheduler.alphas_cumprod[int(t)].to(x)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - (1 - a).sqrt() * out) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    if kind == "sample":
        return out
    raise ValueError(f"prediction type {kind!r} is not supported (epsilon, v_prediction, sample)")


def guidance_gradient(scheduler, guide: Guide, x: torch.Tensor, out: torch.Tensor, t, rows: slice) -> torch.Tensor:
    """d sum(loss(x0_hat(x_t))) / d x_t with the denoiser's output held fixed."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = guide.loss(clean_estimate(scheduler, x, out.detach(), t), rows)
        return torch.autograd.grad(loss.sum(), x)[0]


def guided_output(scheduler, guide: Guide, x: torch.Tensor, out: torch.Tensor, t, rows: slice) -> torch.Tensor:
    """The denoiser's output after guidance: eps' = eps + sqrt(1 - a) * scale * grad, written
    back in the scheduler's prediction type (x_t fixed)."""
    a = scheduler.alphas_cumprod[int(t)].to(x)
    if a < 1e-8:  # zero SNR: x_t says nothing about x0; the gradient is zero for v / eps alike
        return out
    d_eps = (1 - a).sqrt() * guide.scale * guidance_gradient(scheduler, guide, x, out, t, rows)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return out + d_eps
    if kind == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0, x0 = (x - sqrt(1 - a) eps) / sqrt(a)
        return out + d_eps / a.sqrt()
    return out - (1 - a).sqrt() / a.sqrt() * d_eps  # "sample"


def ddim_of(scheduler, steps: int):
    """A DDIM copy of `scheduler` (its training noise schedule; eta = 0; x0 not clipped:
    VAE-scaled latents have unit variance, not [-1, 1]) with `steps` set."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config, clip_sample=False)
    ddim.set_timesteps(steps)
    return ddim


def denoise(make_predict, scheduler, shape: tuple, steps: int, strength: float = 1.0,
            init: torch.Tensor | None = None, seed: int = 0, guide: Guide | None = None,
            batch_size: int = 100, progress: bool = False, desc: str = "sample") -> torch.Tensor:
    """Reverse diffusion of n = shape[0] rows -> clean latents (n, c, h, w), in batches.

    make_predict(rows: slice) -> predict(x_t, t) -> the denoiser's output for those rows
    (guidance and control applied). init: start latents (img2img; noised to the first step
    run by the scheduler's `add_noise`), or None: pure noise and every step (strength 1).
    """
    ddim = ddim_of(scheduler, steps)
    timesteps = ddim.timesteps
    if init is not None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        run = min(int(steps * strength), steps)
        timesteps = timesteps[steps - run:]
        if len(timesteps) == 0:
            raise ValueError(f"strength {strength} x {steps} steps runs no step; raise either")
    from .compute import autocast

    n_guided = guide.steps(len(timesteps)) if guide is not None else 0
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    out = []
    bar = tqdm(total=math.ceil(shape[0] / batch_size) * len(timesteps), desc=desc, disable=not progress, leave=False)
    for s in range(0, shape[0], batch_size):
        rows = slice(s, min(s + batch_size, shape[0]))
        predict = make_predict(rows)
        if init is None:
            x = noise[rows] * ddim.init_noise_sigma
        else:
            x = ddim.add_noise(init[rows].float(), noise[rows], timesteps[:1])
        for i, t in enumerate(timesteps):
            with torch.no_grad(), autocast():  # params compute.precision (a no-op at fp32)
                pred = predict(ddim.scale_model_input(x, t), t).to(x.dtype)
            if i < n_guided:
                pred = guided_output(ddim, guide, x, pred, t, rows)
            x = ddim.step(pred, t, x).prev_sample
            bar.update()
        out.append(x.detach())
    bar.close()
    return torch.cat(out)


def _cfg(eps_u: torch.Tensor, eps_c: torch.Tensor, guidance: float) -> torch.Tensor:
    return eps_u + guidance * (eps_c - eps_u)


def _guided_eps(model, z, t, S_r, F_sem, guidance: float, alpha: float) -> torch.Tensor:
    """NeuroPictor's denoiser with CFG as diffusers' ControlNet pipeline without guess mode:
    the unconditional branch gets the empty-caption states in place of F^sem and the same
    LLMN control, and both branches go through one batched UNet call."""
    if guidance == 1:  # as diffusers: no unconditional branch when it cannot change the result
        return model.eps(z, t, S_r, F_sem, alpha)
    empty = model.empty_states.to(F_sem).expand_as(F_sem)
    eps_u, eps_c = model.eps(torch.cat([z, z]), t, torch.cat([S_r, S_r]), torch.cat([empty, F_sem]),
                             alpha).chunk(2)
    return _cfg(eps_u, eps_c, guidance)


def reconstruct(model, scheduler, maps: torch.Tensor, steps: int = 25, guidance: float = 5.0,
                alpha: float = 1.0, seed: int = 0, semantic_maps: torch.Tensor | None = None,
                batch_size: int = 16, progress: bool = True, guide: Guide | None = None) -> torch.Tensor:
    """NeuroPictor (Sec. 3.4, Inference): fMRI maps (n, ...) -> latents (n, c, h, w) in the
    UNet's (VAE-scaled) space, from pure noise.

    scheduler: any diffusers scheduler whose config defines the training noise schedule (a DDIM
    copy is used; deterministic given `seed`, whatever `batch_size`). guidance: CFG scale (1 =
    conditional only). alpha: control scale of Eq. 7 (0 = semantics only). semantic_maps: if
    given, F^sem comes from these maps while the LLMN's low-level control still comes from
    `maps` (the swap of Fig. 2). guide: gradient guidance (rows index `maps`).
    """
    if semantic_maps is not None and len(semantic_maps) != len(maps):
        raise ValueError(f"semantic_maps has {len(semantic_maps)} rows but maps has {len(maps)}")
    unet = model.unet
    device = model.empty_states.device
    c, side = unet.config.in_channels, unet.config.sample_size

    def make_predict(rows):
        with torch.no_grad():
            S_r, _, F_sem = model.conditions(maps[rows].to(device))
            if semantic_maps is not None:
                F_sem = model.conditions(semantic_maps[rows].to(device))[2]
        return lambda x, t: _guided_eps(model, x.to(device=device, dtype=F_sem.dtype), t, S_r, F_sem,
                                        guidance, alpha).to(x)

    was_training = model.training
    model.eval()
    try:
        z = denoise(make_predict, scheduler, (len(maps), c, side, side), steps, seed=seed, guide=guide,
                    batch_size=batch_size, progress=progress, desc="reconstruct")
    finally:
        model.train(was_training)
    return z.cpu()


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE-scaled latents (n, c, h, w) -> images (n, 3, H, W) in [0, 1]."""
    device = next(vae.parameters()).device
    scale = vae.config.scaling_factor
    images = [vae.decode(latents[s:s + batch_size].to(device) / scale).sample.cpu()
              for s in range(0, len(latents), batch_size)]
    return (torch.cat(images) / 2 + 0.5).clamp(0, 1)


def img2img(pipe, z: torch.Tensor, c: torch.Tensor, strength: float, steps: int, guidance: float, seed: int,
            batch_size: int = 100, guide: Guide | None = None, progress: bool = False) -> torch.Tensor:
    """Every voxel method's stage 2: img2img through the foundation pipeline's UNet and
    scheduler from VAE-scaled latents z (n, 4, h, w) at `strength`, conditioned on text
    states c (n, L_T, d_T) with classifier-free guidance against the empty caption ->
    images (n, 3, H, W) in [0, 1]. guide: gradient guidance (rows index z)."""
    from .decoding import caption_states

    if len(z) != len(c):
        raise ValueError(f"z has {len(z)} rows but c has {len(c)}")
    unet = pipe.unet
    with torch.no_grad():
        empty = caption_states(pipe, [""])

    def make_predict(rows):
        cond = c[rows].to(device=unet.device, dtype=unet.dtype)
        states = torch.cat([empty.to(cond).expand_as(cond), cond])

        def predict(x, t):
            x = x.to(unet.device)
            if guidance <= 1:
                return unet(x, t, encoder_hidden_states=cond).sample.cpu()
            eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=states).sample.chunk(2)
            return _cfg(eps_u, eps_c, guidance).cpu()
        return predict

    latents = denoise(make_predict, pipe.scheduler, tuple(z.shape), steps, strength=strength, init=z, seed=seed,
                      guide=guide, batch_size=batch_size, progress=progress, desc="img2img")
    return decode(pipe.vae, latents, batch_size=batch_size)
