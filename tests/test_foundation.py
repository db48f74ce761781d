"""Tiny end-to-end run of the foundation code path: train, save as a diffusers pipeline,
load it back with the paper-world loader, generate."""
from __future__ import annotations

import numpy as np
import torch

from neuropictor.data.stimuli import make_stimuli
from neuropictor.models import foundation as fd
from neuropictor.models.pretrained import load_diffusion
from neuropictor.models.tokenizer import build_tokenizer
from neuropictor.train import TensorBatches, TrainConfig, fit


def test_tiny_foundation_end_to_end(tmp_path):
    images, caps, _ = make_stimuli(24, 32, np.random.default_rng(0))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    cfg = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup=3, log_every=10)

    vae_spec = fd.VAESpec(channels=(8, 16), norm_groups=4)
    vae = fd.build_vae(vae_spec, 32)
    hist = fit(vae, fd.vae_loss(vae_spec.object_weight), TensorBatches(x), cfg, desc="vae")
    assert hist[-1]["loss"] < hist[0]["loss"]
    with torch.no_grad():
        z = vae.encode(x[:2]).latent_dist.mean
    assert z.shape == (2, 4, 16, 16)

    captions = [c[0] for c in caps]
    tok = build_tokenizer(captions, max_length=16)
    clip_spec = fd.CLIPSpec(width=32, layers=1, heads=2, embed_dim=16, max_length=16, patch=8)
    clip = fd.build_clip(clip_spec, len(tok), image_size=32)
    ids = torch.tensor(tok(captions, padding="max_length", max_length=16, truncation=True).input_ids)
    hist = fit(clip, fd.clip_loss(), TensorBatches((x + 1) / 2, ids), cfg, desc="clip")
    assert hist[-1]["loss"] < hist[0]["loss"]
    text = fd.text_encoder_of(clip)
    with torch.no_grad():
        states = text(ids).last_hidden_state
        torch.testing.assert_close(states, clip.text_model(ids).last_hidden_state)
        empty = text(torch.tensor(tok([""], padding="max_length", max_length=16).input_ids)).last_hidden_state

    from diffusers import DDPMScheduler

    unet = fd.build_unet(fd.UNetSpec(channels=(16, 32), heads=2), 16, 4, 32)
    z0 = fd.image_latents(vae, (x + 1) / 2, scale=1.0)
    scale = float(1 / z0.std())
    z0 = z0 * scale
    loss = fd.diffusion_loss(DDPMScheduler(num_train_timesteps=1000), empty[0], 0.1)
    hist = fit(unet, loss, TensorBatches(z0, states), TrainConfig(steps=20, batch_size=8, lr=1e-3, warmup=2,
                                                                   log_every=10), desc="unet")
    assert np.isfinite(hist[-1]["loss"])

    fd.save_pipeline(tmp_path / "pipe", vae, text, tok, unet, scale)
    pipe = load_diffusion(tmp_path / "pipe")
    assert abs(pipe.vae.config.scaling_factor - scale) < 1e-6
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], unet.state_dict()["conv_in.weight"])
    out = pipe(captions[0], num_inference_steps=2, guidance_scale=5.0, height=32, width=32,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_noise_schedule_zero_terminal_snr_and_v_prediction():
    plain = fd.noise_schedule("ddpm")
    assert plain.config.prediction_type == "epsilon" and float(plain.alphas_cumprod[-1]) > 1e-3  # SD's leak
    zs = fd.noise_schedule("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    assert float(zs.alphas_cumprod[-1]) < 1e-6  # t = T is pure noise
    ddim = fd.noise_schedule("ddim", prediction_type="v_prediction", zero_terminal_snr=True)
    ddim.set_timesteps(5)
    assert int(ddim.timesteps[0]) == 999  # trailing spacing: sampling starts at t = T
    try:
        fd.noise_schedule("ddpm", zero_terminal_snr=True)
    except ValueError as e:
        assert "v_prediction" in str(e) and "foundation.unet.prediction" in str(e)
    else:
        raise AssertionError("epsilon prediction with zero terminal SNR must be refused")


def test_diffusion_target_follows_the_prediction_type():
    z0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 500, 999])
    assert torch.equal(fd.diffusion_target(fd.noise_schedule("ddpm"), z0, noise, t), noise)
    sched = fd.noise_schedule("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = fd.diffusion_target(sched, z0, noise, t)
    torch.testing.assert_close(v, a.sqrt() * noise - (1 - a).sqrt() * z0)
    torch.testing.assert_close(v[2], -z0[2])  # at SNR 0 the velocity is minus the clean latent
    # Min-SNR weights stay finite at SNR 0 for v-prediction
    w = fd.snr_weights(sched, t, 5.0)
    assert torch.isfinite(w).all() and float(w[2]) == 0.0


def test_primary_caption_is_the_full_captions_prefix_with_the_same_states():
    """`unet.primary_caption_share` rests on this: the primary caption is the full caption cut
    after the primary object's name, and the causal text tower gives its tokens the very
    states the full caption has there (so what the UNet learns from it transfers)."""
    from neuropictor.data.corpus import SceneCorpus, ScenePool, primary_captions
    from neuropictor.data.stimuli import SHAPES, full_caption, scene_of_row

    pool = ScenePool(SceneCorpus(7), 12)
    primary = primary_captions(pool.attributes)
    full = [full_caption(scene_of_row(row)) for _, row in pool.attributes.iterrows()]
    for p, f, shape in zip(primary, full, pool.attributes["shape_0"]):
        assert f.startswith(p + " ") and p.endswith(" " + shape) and shape in SHAPES
    tok = build_tokenizer([c for caps in pool.captions for c in caps], max_length=24)
    clip = fd.build_clip(fd.CLIPSpec(width=32, layers=2, heads=2, embed_dim=16, max_length=24, patch=8),
                         len(tok), image_size=64)
    text = fd.text_encoder_of(clip)
    ids = lambda texts: torch.tensor(tok(texts, padding="max_length", max_length=24).input_ids)  # noqa: E731
    with torch.no_grad():
        sp, sf = text(ids(primary)).last_hidden_state, text(ids(full)).last_hidden_state
    for i, p in enumerate(primary):
        n = len(tok(p).input_ids) - 1  # BOS + the words, without the end token
        torch.testing.assert_close(sp[i, :n], sf[i, :n])
        assert not torch.allclose(sp[i, n:], sf[i, n:])  # after the name they differ
