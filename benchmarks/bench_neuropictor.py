"""NeuroPictor's training step and sampler against plain diffusers ControlNet equivalents.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_neuropictor.py [--batch 32] [--steps 10]
        [--sample-steps 25] [--n 100] [--sample-batch 16] [--threads 2] [--unet-channels 32,64,128] [--quick]

Both sides run side by side in one process on the same randomly initialised models, built as
the project builds them (foundation.build_unet / build_vae / build_clip + text_encoder_of,
tokenizer.build_tokenizer, FlatmapMAE(EncoderSpec()) on 64 x 64 flatmaps), with the ControlNet's
zero convs (and the HLGN's zero conv) perturbed so the control really changes the UNet's output.

1. Training step (forward + backward + AdamW step, same batch, same drop / noise / t draws:
   both sides reseed the global RNG identically before every step):
     ours:      neuropictor_loss(NeuroPictor, (maps, z0, caption states)), AdamW over encoder +
                HLGN + LLMN (feature transform + ControlNet);
     diffusers: a copy of the same ControlNetModel (from_unet, conditioning_embedding_out_channels
                = (C0,), 4 conditioning channels) fed a fixed latent-shaped condition and the
                caption states, the same frozen UNet with down/mid_block_additional_residual,
                epsilon MSE, AdamW over the ControlNet only.
   The extra work on our side (fMRI encoder, HLGN, feature transform, L_sem, grads into F^sem)
   is the overhead measured. Timed: median of --steps interleaved steps after warm-up. Check:
   before any update, the plain loss fed our F^sem / F_0^l equals our loss - lambda * L_sem.
2. Sampling (DDIM, --sample-steps steps, CFG 5, alpha 1, chunks of --sample-batch maps):
     ours:      sample.reconstruct + sample.decode (includes encoder + HLGN per chunk and the
                feature transform at every step);
     diffusers: StableDiffusionControlNetPipeline(same UNet, VAE, text encoder, tokenizer,
                controlnet = model.llmn.manipulator, DDIM from the same config), called with
                prompt_embeds = F^sem, negative_prompt_embeds = empty-caption states, image = F_0^l,
                latents = the same initial noise, output_type="pt" (so it includes the decode and
                the [-1, 1] -> [0, 1] postprocess). F^sem / F_0^l are computed outside its timing.
   Control image: the pipeline's VaeImageProcessor returns a 4-channel tensor untouched (it
   treats it as latents; asserted below), so F_0^l reaches the ControlNet as is, with no
   resize and no pixel-space detour. The pipeline then takes height / width from that 16 px
   tensor and would draw 16 / vae_scale_factor = 4 px latents, so the initial noise is passed
   explicitly (latents=, the same draws reconstruct makes: seed = chunk index). Timed: whole
   calls, chunk by chunk, alternating which side goes first. Check: final latents (captured
   with callback_on_step_end) and decoded images of both sides.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from neuropictor.models.fmri_encoder import EncoderSpec, FlatmapMAE  # noqa: E402
from neuropictor.models.foundation import (CLIPSpec, UNetSpec, VAESpec, build_clip, build_unet,  # noqa: E402
                                           build_vae, noise_schedule, text_encoder_of)
from neuropictor.decoding import caption_states  # noqa: E402
from neuropictor.models.neuropictor import ModelSwitches, NeuroPictor, neuropictor_loss  # noqa: E402
from neuropictor.models.tokenizer import build_tokenizer  # noqa: E402
from neuropictor.sample import decode, reconstruct  # noqa: E402

CAPTIONS = ["a red circle", "a blue square", "a green triangle on the left", "a small yellow star",
            "two purple circles", "a large orange square at the top"]


def build(seed: int = 0, channels: tuple[int, ...] = (32, 64, 128)):
    """NeuroPictor on a random frozen foundation; its ControlNet's zero convs perturbed."""
    torch.manual_seed(seed)
    tok = build_tokenizer(CAPTIONS, max_length=32)
    te = text_encoder_of(build_clip(CLIPSpec(), vocab_size=len(tok))).requires_grad_(False)
    vae = build_vae(VAESpec()).eval().requires_grad_(False)
    unet = build_unet(UNetSpec(channels=channels, heads=4), latent_side=16, latent_channels=4, cross_dim=128)
    ddim = noise_schedule("ddim")  # as foundation.save_pipeline writes it; training uses its DDPM twin
    text = SimpleNamespace(tokenizer=tok, text_encoder=te)
    empty, states = caption_states(text, [""]), caption_states(text, CAPTIONS)
    model = NeuroPictor(FlatmapMAE(EncoderSpec()), unet, empty, noise_schedule("ddpm"), ModelSwitches())
    cn = model.llmn.manipulator
    with torch.no_grad():  # the zero convs: nonzero, so the control changes the UNet's output
        for conv in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out,
                     model.hlgn.aux[-1]]:
            conv.weight.normal_(0, 0.05)
            conv.bias.normal_(0, 0.01)
    return model, ddim, vae, te, tok, states


def plain_loss(controlnet, unet, sched, z0, states, cond, empty, rate):
    """A plain ControlNet training loss, drawing drop / noise / t in NeuroPictor.forward's order."""
    n = len(z0)
    drop = torch.rand(n) < rate
    states = torch.where(drop[:, None, None], empty.to(states), states)
    noise = torch.randn_like(z0)
    t = torch.randint(0, sched.config.num_train_timesteps, (n,))
    z_t = sched.add_noise(z0, noise, t)
    down, mid = controlnet(z_t, t, encoder_hidden_states=states, controlnet_cond=cond, return_dict=False)
    eps = unet(z_t, t, encoder_hidden_states=states, down_block_additional_residuals=down,
               mid_block_additional_residual=mid).sample
    return F.mse_loss(eps, noise)


def bench_train(model, states, args):
    n = args.batch
    g = torch.Generator().manual_seed(1)
    maps, z0 = torch.randn(n, 64, 64, generator=g), torch.randn(n, 4, 16, 16, generator=g)
    text = states[torch.arange(n) % len(states)]
    cond = torch.randn(n, 4, 16, 16, generator=g)  # the plain side's fixed control "image"
    plain_cn = copy.deepcopy(model.llmn.manipulator).train()
    unet, sched, sw = model.unet, model.noise_scheduler, model.switches
    model.train()

    # check: with our F^sem / F_0^l as its inputs, the plain loss is our L_dif
    with torch.no_grad():
        S_r, F_txt, F_sem = model.conditions(maps)
        F0, L_sem = model.llmn.feature_transform(S_r), model.semantic_loss(F_txt, text)
        torch.manual_seed(123)
        ours = model(maps, z0, text)
        torch.manual_seed(123)
        drop = torch.rand(n) < sw.empty_rate
        F_sem = torch.where(drop[:, None, None], model.empty_states, F_sem)
        torch.manual_seed(123)
        plain = plain_loss(plain_cn, unet, sched, z0, F_sem, F0, model.empty_states, sw.empty_rate)
    diff = abs(float(ours - sw.lambda_sem * L_sem) - float(plain))
    print(f"train check: ours L_dif = {float(ours - sw.lambda_sem * L_sem):.6f}  plain loss on our inputs = "
          f"{float(plain):.6f}  |diff| = {diff:.1e}  (L_sem = {float(L_sem):.4f})")
    assert diff < 1e-4 * max(1.0, float(plain)), "the two training losses disagree"

    ours_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    plain_opt = torch.optim.AdamW(plain_cn.parameters(), lr=1e-5)

    def ours_step():
        loss, _ = neuropictor_loss(model, (maps, z0, text))
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def plain_step():
        loss = plain_loss(plain_cn, unet, sched, z0, text, cond, model.empty_states, sw.empty_rate)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    times = {"ours": [], "plain": []}
    for i in range(args.warmup + args.steps):  # interleaved, alternating order: load drift hits both
        for side in (("ours", "plain") if i % 2 else ("plain", "ours")):
            torch.manual_seed(1000 + i)  # same drop / noise / t on both sides
            t = time.perf_counter()
            (ours_step if side == "ours" else plain_step)()
            if i >= args.warmup:
                times[side].append(time.perf_counter() - t)
    n_ours = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"trainable parameters: ours {n_ours / 1e6:.2f} M, plain ControlNet "
          f"{sum(p.numel() for p in plain_cn.parameters()) / 1e6:.2f} M")
    return statistics.median(times["ours"]), statistics.median(times["plain"])


def bench_sample(model, ddim, vae, te, tok, args):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=model.unet, controlnet=model.llmn.manipulator,
        scheduler=noise_schedule("ddim"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    model.eval()
    maps = torch.randn(args.n, 64, 64, generator=torch.Generator().manual_seed(2))
    c, side, sb = 4, 16, args.sample_batch

    def ours(rows, seed, alpha=1.0):
        z = reconstruct(model, ddim, maps[rows], steps=args.sample_steps, guidance=5.0, alpha=alpha, seed=seed,
                        batch_size=sb, progress=False)
        return z, decode(vae, z, batch_size=sb)

    def theirs(rows, seed, F_sem, F0):
        noise = torch.randn((len(F0), c, side, side), generator=torch.Generator().manual_seed(seed))
        last = {}

        def keep(pipe_, i, t, kw):
            last["z"] = kw["latents"]
            return {}
        img = pipe(prompt_embeds=F_sem, negative_prompt_embeds=model.empty_states.expand_as(F_sem), image=F0,
                   latents=noise, num_inference_steps=args.sample_steps, guidance_scale=5.0,
                   controlnet_conditioning_scale=1.0, output_type="pt", callback_on_step_end=keep).images
        return last["z"], img

    chunks = [slice(s, s + sb) for s in range(0, args.n, sb)]
    with torch.no_grad():  # the pipeline's inputs, outside its timing
        inputs = []
        for rows in chunks:
            S_r, _, F_sem = model.conditions(maps[rows])
            inputs.append((F_sem, model.llmn.feature_transform(S_r)))
    F0 = inputs[0][1]
    assert torch.equal(pipe.control_image_processor.preprocess(F0), F0), "the pipeline would alter F_0^l"
    ours(chunks[0], 0)  # warm-up
    theirs(chunks[0], 0, *inputs[0])
    t_ours = t_theirs = 0.0
    dz = dimg = zmax = 0.0
    first = None
    for k, rows in enumerate(chunks):
        for side_ in (("ours", "theirs") if k % 2 else ("theirs", "ours")):
            t = time.perf_counter()
            if side_ == "ours":
                z_o, img_o = ours(rows, k)
                t_ours += time.perf_counter() - t
                first = img_o if k == 0 else first
            else:
                z_t, img_t = theirs(rows, k, *inputs[k])
                t_theirs += time.perf_counter() - t
        assert z_t.shape == z_o.shape and img_t.shape == img_o.shape, (z_t.shape, z_o.shape, img_t.shape, img_o.shape)
        dz, dimg = max(dz, float((z_o - z_t).abs().max())), max(dimg, float((img_o - img_t).abs().max()))
        zmax = max(zmax, float(z_o.abs().max()))
    effect = float((ours(chunks[0], 0, alpha=0.0)[1] - first).abs().max())  # what the control changes
    same = dz <= 1e-3 * max(1.0, zmax) and dimg <= 1e-3  # flagged, not raised: keep the timings
    print(f"sample check: max |latents ours - diffusers| = {dz:.1e} (max |latent| {zmax:.2f}); "
          f"max |image diff| = {dimg:.1e} (images in [0, 1]); control effect (alpha 1 vs 0) = {effect:.2f}"
          f"  {'same' if same else 'MISMATCH'}")
    return t_ours * 100 / args.n, t_theirs * 100 / args.n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="training batch size")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps per side first")
    ap.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--n", type=int, default=100, help="images sampled per side")
    ap.add_argument("--sample-batch", type=int, default=16, help="maps per sampling chunk (reconstruct's default)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    ap.add_argument("--unet-channels", default="32,64,128",
                    help="block widths of the frozen UNet (default: the synthetic world's, params.yaml "
                         "foundation.unet.channels); wider shows how the fixed cost of the fMRI encoder and HLGN "
                         "shrinks relative to UNet + ControlNet as the UNet grows toward SD's")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check, not a measurement")
    args = ap.parse_args()
    channels = tuple(int(c) for c in args.unet_channels.split(","))
    if args.quick:
        args.batch, args.steps, args.warmup, args.sample_steps, args.n, args.sample_batch = 4, 2, 1, 3, 4, 2
    torch.set_num_threads(args.threads)

    model, ddim, vae, te, tok, states = build(channels=channels)
    print(f"UNet channels {channels} ({sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f} M parameters); "
          f"fMRI encoder {sum(p.numel() for p in model.encoder.parameters()) / 1e6:.1f} M; batch {args.batch}; "
          f"{args.steps} timed train steps (+{args.warmup} warm-up); {args.n} images, "
          f"{args.sample_steps} DDIM steps, CFG 5, chunks of {args.sample_batch}; "
          f"torch threads {torch.get_num_threads()}")
    train_ours, train_plain = bench_train(model, states, args)
    # fresh weights: sampling with the untrained (perturbed) model
    model, ddim, vae, te, tok, _ = build(channels=channels)
    sample_ours, sample_theirs = bench_sample(model, ddim, vae, te, tok, args)

    print(f"{'':<28}{'ours':>10}{'diffusers':>12}{'ratio':>8}{'target':>9}")
    for name, a, b, target in (("train step (s)", train_ours, train_plain, 1.2),
                               ("sampling (s / 100 images)", sample_ours, sample_theirs, 1.1)):
        r = a / b
        print(f"{name:<28}{a:>10.3f}{b:>12.3f}{r:>8.2f}{'<= ' + str(target):>9}  {'ok' if r <= target else 'MISSED'}")


if __name__ == "__main__":
    main()
