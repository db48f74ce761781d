"""What the paper world needs of a GPU (issue 13's memory table), measured at full size.

    python benchmarks/paper_gpu.py [--batches 1,8,16] [--out paper_gpu.json]

Builds NeuroPictor from `params.paper.yaml` through the stages' own code
(`decoding.build_neuropictor`) on SD-2.1-base's UNet config at full depth (widths
320 / 640 / 1280 / 1280, two res blocks per level, 5 / 10 / 20 / 20 heads, context 77 x 1024,
randomly initialised: memory and time do not depend on the weights), the 24-layer fMRI
encoder at width 1024 on a 256 x 256 flatmap, the released HLGN / LLMN layout, and SD's VAE
layout (128 / 256 / 512 / 512) for the 512-px decode. Then, in bf16 autocast with fp32
master weights and AdamW over the trainable parts (encoder, HLGN, LLMN):

- training: peak GPU memory and median step time at each batch, with and without the
  frozen UNet's and the ControlNet copy's gradient checkpointing;
- sampling: DDIM 50 steps with classifier-free guidance (batch 2n through the UNet) plus the
  VAE decode, seconds per image at batch 1 and the largest batch.

Needs CUDA; writes one JSON (--out) as it goes. The README's "What the paper world needs"
table is this file's output.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from neuropictor.config import PROJ_ROOT, load_params

L_T, D_T = 77, 1024
LATENT = (4, 64, 64)


def build(cfg, device):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from neuropictor import decoding

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=LATENT[1], in_channels=LATENT[0], out_channels=LATENT[0],
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2,
            cross_attention_dim=D_T, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, scaling_factor=0.18215)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="epsilon", num_train_timesteps=1000)
    empty = torch.zeros(1, L_T, D_T, device=device)
    cfg = replace(cfg, neuropictor=replace(cfg.neuropictor, encoder_init="random"))
    decoding.caption_states = lambda pipe, texts: empty  # the 1 GB text tower is not what is measured
    with torch.device(device):
        model = decoding.build_neuropictor(cfg, SimpleNamespace(pipe=SimpleNamespace(unet=unet, scheduler=scheduler)),
                                           np.ones((256, 256), bool), "refine")
    return model.to(device), vae.eval().requires_grad_(False)


def counts(model) -> dict:
    parts = {"unet (frozen)": model.unet, "controlnet copy": model.llmn.manipulator, "fmri encoder": model.encoder,
             "hlgn": model.hlgn}
    out = {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for k, m in parts.items()}
    out["trainable"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1)
    out["all"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    return out


def train_point(model, batch: int, checkpointing: bool, device, steps: int = 4) -> dict:
    for m in (model.unet, model.llmn.manipulator):
        (m.enable_gradient_checkpointing if checkpointing else m.disable_gradient_checkpointing)()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    maps = torch.randn(batch, 256, 256, device=device)
    z0 = torch.randn(batch, *LATENT, device=device)
    states = torch.randn(batch, L_T, D_T, device=device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    model.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(maps, z0, states)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del opt
    torch.cuda.empty_cache()
    return {"batch": batch, "checkpointing": checkpointing, "peak_gib": round(peak, 2),
            "step_s": round(statistics.median(times[1:]), 3), "images_per_s": round(batch / statistics.median(times[1:]), 1)}


@torch.no_grad()
def sample_point(model, vae, batch: int, device, steps: int = 50) -> dict:
    from neuropictor.sample import reconstruct

    maps = torch.randn(batch, 256, 256)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        latents = reconstruct(model, model.noise_scheduler, maps, steps=steps, guidance=5.0, batch_size=batch,
                              progress=False)
        t_unet = time.perf_counter() - t
        images = vae.decode(latents.to(device) / vae.config.scaling_factor).sample
    torch.cuda.synchronize()
    total = time.perf_counter() - t
    assert tuple(images.shape) == (batch, 3, 512, 512) and torch.isfinite(images.float()).all()
    return {"batch": batch, "ddim_steps": steps, "s_per_image": round(total / batch, 3),
            "denoise_s_per_image": round(t_unet / batch, 3), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--out", default="paper_gpu.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/paper_gpu.py measures a GPU: no CUDA device is visible here.")
    device = torch.device("cuda")
    cfg = load_params(PROJ_ROOT / "params.paper.yaml")
    t = time.time()
    model, vae = build(cfg, device)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "precision": "bf16 autocast, fp32 master",
              "optimizer": "AdamW (trainable parts)", "build_s": round(time.time() - t, 1),
              "parameters_m": counts(model), "static_gib": round(torch.cuda.memory_allocated() / 2**30, 2),
              "train": [], "sample": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)

    save()
    print(json.dumps(report["parameters_m"]), flush=True)
    for checkpointing in (False, True):
        for batch in map(int, args.batches.split(",")):
            try:
                row = train_point(model, batch, checkpointing, device)
            except torch.cuda.OutOfMemoryError:
                row = {"batch": batch, "checkpointing": checkpointing, "peak_gib": "out of memory"}
                torch.cuda.empty_cache()
            report["train"].append(row)
            print("train", row, flush=True)
            save()
    for batch in (1, max(map(int, args.batches.split(",")))):
        row = sample_point(model, vae, batch, device)
        report["sample"].append(row)
        print("sample", row, flush=True)
        save()


if __name__ == "__main__":
    main()
