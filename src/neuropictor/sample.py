"""Reconstruction (Sec. 3.4, Inference): DDIM sampling of the NeuroPictor model with
classifier-free guidance, control scale alpha and the semantic swap of Fig. 2.

    latents = reconstruct(model, scheduler, maps, steps=25, guidance=5.0, alpha=1.0)
    images = decode(vae, latents)          # (n, 3, H, W) in [0, 1]

CFG follows diffusers' ControlNet pipeline without guess mode: the unconditional branch
gets the empty-caption states in place of F^sem and the same LLMN control, and both
branches go through one batched UNet call.
"""
from __future__ import annotations

import torch
from tqdm import tqdm


def _guided_eps(model, z, t, S_r, F_sem, guidance: float, alpha: float) -> torch.Tensor:
    if guidance == 1:  # as diffusers: no unconditional branch when it cannot change the result
        return model.eps(z, t, S_r, F_sem, alpha)
    empty = model.empty_states.to(F_sem).expand_as(F_sem)
    eps_u, eps_c = model.eps(torch.cat([z, z]), t, torch.cat([S_r, S_r]), torch.cat([empty, F_sem]),
                             alpha).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@torch.no_grad()
def reconstruct(model, scheduler, maps: torch.Tensor, steps: int = 25, guidance: float = 5.0,
                alpha: float = 1.0, seed: int = 0, semantic_maps: torch.Tensor | None = None,
                batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """fMRI maps (n, ...) -> latents (n, c, h, w) in the UNet's (VAE-scaled) space.

    scheduler: any diffusers scheduler whose config defines the training noise schedule; a
    `DDIMScheduler` is built from its config (eta = 0, x0 not clipped; deterministic given
    `seed`, which draws all initial noise from one generator, whatever `batch_size`).
    guidance: CFG scale (1 = conditional only). alpha: control scale of Eq. 7 (0 =
    semantics only). semantic_maps: if given, F^sem comes from these maps while the LLMN's
    low-level control still comes from `maps` (the swap of Fig. 2).
    """
    from diffusers import DDIMScheduler

    if semantic_maps is not None and len(semantic_maps) != len(maps):
        raise ValueError(f"semantic_maps has {len(semantic_maps)} rows but maps has {len(maps)}")
    # a copy (the caller's scheduler is untouched); VAE-scaled latents have unit variance, not
    # [-1, 1], so x0 is never clipped (as in Stable Diffusion's scheduler config)
    ddim = DDIMScheduler.from_config(scheduler.config, clip_sample=False)
    ddim.set_timesteps(steps)
    unet = model.unet
    device = model.empty_states.device
    c, side = unet.config.in_channels, unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(maps), c, side, side), generator=generator) * ddim.init_noise_sigma

    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(maps), batch_size)
    bar = tqdm(total=len(starts) * steps, desc="reconstruct", disable=not progress, leave=False)
    for s in starts:
        rows = slice(s, s + batch_size)
        S_r, _, F_sem = model.conditions(maps[rows].to(device))
        if semantic_maps is not None:
            F_sem = model.conditions(semantic_maps[rows].to(device))[2]
        z = noise[rows].to(device=device, dtype=F_sem.dtype)
        for t in ddim.timesteps:
            eps = _guided_eps(model, ddim.scale_model_input(z, t), t, S_r, F_sem, guidance, alpha)
            z = ddim.step(eps, t, z).prev_sample
            bar.update()
        out.append(z.cpu())
    bar.close()
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE-scaled latents (n, c, h, w) -> images (n, 3, H, W) in [0, 1]."""
    device = next(vae.parameters()).device
    scale = vae.config.scaling_factor
    images = [vae.decode(latents[s:s + batch_size].to(device) / scale).sample.cpu()
              for s in range(0, len(latents), batch_size)]
    return (torch.cat(images) / 2 + 0.5).clamp(0, 1)


_IMG2IMG: dict = {}


@torch.no_grad()
def img2img(pipe, z: torch.Tensor, c: torch.Tensor, strength: float, steps: int, guidance: float, seed: int,
            batch_size: int = 100) -> torch.Tensor:
    """Every voxel method's stage 2: diffusers' img2img from VAE-scaled latents z (n, 4, h, w)
    at `strength`, conditioned on text states c (n, L_T, d_T) with classifier-free guidance
    against the empty caption -> images (n, 3, H, W) in [0, 1]. Seeded per call."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from .decoding import caption_states

    key = id(pipe)
    if key not in _IMG2IMG:
        _IMG2IMG.clear()
        _IMG2IMG[key] = (StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False),
                         caption_states(pipe, [""]))
    i2i, empty = _IMG2IMG[key]
    i2i.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(z), batch_size):
        zc, cc = z[s:s + batch_size], c[s:s + batch_size]
        images = i2i(image=zc, prompt_embeds=cc, negative_prompt_embeds=empty.expand(len(cc), -1, -1),
                     strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                     generator=generator, output_type="pt").images
        out.append(images.float().clamp(0, 1))
    return torch.cat(out)
