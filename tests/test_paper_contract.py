"""The paper world's contract at its real widths and token counts (issue 13), on CPU.

Every paper-world module is built from `params.paper.yaml` through the same code the DVC
stages use (`decoding.build_neuropictor`), at SD-2.1-base's widths: a 256 x 256 flatmap
with 16 px patches -> S^r 257 x 1024; HLGN 257 -> 128 -> 77 tokens at width 1024 with
LayerNorm; the LLMN's feature map 320 x 64 x 64 added after the ControlNet copy's conv_in;
a UNet of widths 320 / 640 / 1280 / 1280 with context 77 x 1024; a VAE taking 512 px images
to 4 x 64 x 64 latents. Depth is reduced (one encoder layer, one res block per UNet level,
the VAE's smallest widths) so it runs in about a minute. One training step and one DDIM
sampling step (with CFG) run, and every intermediate shape is checked against
../shared/REFERENCE.md. Two more cases build it with a deliberately wrong width: the
contract must catch each (the checks can fail).
"""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neuropictor.config import PROJ_ROOT, load_params

# ../shared/REFERENCE.md, "NeuroPictor's released code"
L_R, D_R = 257, 1024  # S^r: 256 patches of 16 x 16 + the guide token, width 1024
HLGN_HIDDEN, L_T, D_T = 128, 77, 1024  # token convs 257 -> 128 -> 77; OpenCLIP ViT-H text width
SD_WIDTHS = (320, 640, 1280, 1280)  # SD-2.1-base: width 320, channel mult (1, 2, 4, 4)
LATENT = (4, 64, 64)  # 512 px / 8


def _sd21_base_unet(context_width: int):
    """SD-2.1-base's UNet config (diffusers' names) with one res block per level."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=LATENT[1], in_channels=LATENT[0], out_channels=LATENT[0], block_out_channels=SD_WIDTHS,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=1,
        cross_attention_dim=context_width, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)


def _small_vae():
    """SD's VAE layout (8x downsampling, 4 latent channels) at reduced widths."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT[0],
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                         scaling_factor=0.18215)


@pytest.fixture(scope="module")
def paper_cfg():
    return load_params(PROJ_ROOT / "params.paper.yaml")


def _build(monkeypatch, cfg, context_width: int = D_T, **neuropictor):
    from diffusers import DDPMScheduler

    from neuropictor import decoding

    unet = _sd21_base_unet(context_width)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="epsilon", num_train_timesteps=1000)
    pipe = SimpleNamespace(unet=unet, scheduler=scheduler)
    empty = torch.zeros(1, L_T, D_T)  # the text tower's empty-caption states (77 x 1024)
    cfg = replace(cfg, neuropictor=replace(cfg.neuropictor, encoder_init="random", **neuropictor),  # no stage 03 here
                  encoder=replace(cfg.encoder, depth=1, decoder_depth=1))
    monkeypatch.setattr(decoding, "caption_states", lambda pipe, texts: empty)  # no 1 GB text tower here
    return decoding.build_neuropictor(cfg, SimpleNamespace(pipe=pipe), np.ones((256, 256), bool), "refine")


def _record_shapes(model) -> dict:
    """Forward hooks on the contract's intermediate points -> their output shapes."""
    shapes = {}

    def keep(name):
        return lambda module, args, out: shapes.__setitem__(name, tuple((out[0] if isinstance(out, tuple) else out).shape))

    h = model.hlgn.fmri_to_text
    h[0][0].register_forward_hook(keep("hlgn hidden tokens"))
    h[0].register_forward_hook(keep("hlgn tokens"))
    h[-1].register_forward_hook(keep("F~txt"))
    model.hlgn.aux[-1].register_forward_hook(keep("F^au"))
    model.llmn.feature_transform.register_forward_hook(keep("F_0^l"))
    model.llmn.manipulator.conv_in.register_forward_hook(keep("ControlNet conv_in"))
    model.llmn.manipulator.mid_block.register_forward_hook(keep("ControlNet middle"))
    model.unet.register_forward_hook(lambda m, a, out: shapes.__setitem__("UNet out", tuple(out.sample.shape)))
    return shapes


CONTRACT = {"hlgn hidden tokens": (HLGN_HIDDEN, D_R), "hlgn tokens": (L_T, D_R), "F~txt": (L_T, D_T),
            "F^au": (L_T, D_T), "F_0^l": (SD_WIDTHS[0], *LATENT[1:]), "ControlNet conv_in": (SD_WIDTHS[0], *LATENT[1:])}


def _mismatches(shapes: dict) -> list[str]:
    return [f"{k}: {shapes.get(k)} != (n, {', '.join(map(str, v))})" for k, v in CONTRACT.items()
            if shapes.get(k, (None,))[1:] != v]


def test_paper_params_are_the_released_layout(paper_cfg):
    cfg = paper_cfg  # SD-2.1-base's geometry, the released code's layout
    assert (cfg.prep.flatmap_size, cfg.encoder.patch, cfg.encoder.width, cfg.prep.image_size) == (256, 16, 1024, 512)
    assert (cfg.neuropictor.hlgn_hidden_tokens, cfg.neuropictor.hlgn_layer_norm, cfg.neuropictor.hlgn_dropout,
            cfg.neuropictor.llmn_map, cfg.neuropictor.llmn_input) == (HLGN_HIDDEN, True, 0.0, "features", "raw")


@pytest.mark.parametrize("wrong", ["context width 768", "HLGN hidden tokens 167"])
def test_contract_catches_a_wrong_width(monkeypatch, paper_cfg, wrong):
    """The checks bite: a UNet whose context is not the text width is refused at build time;
    an HLGN with this world's token count instead of the released 128 is reported."""
    if wrong.startswith("context"):
        with pytest.raises(ValueError, match="cross_attention_dim"):
            _build(monkeypatch, paper_cfg, context_width=768)
        return
    model = _build(monkeypatch, paper_cfg, hlgn_hidden_tokens=None)  # (257 + 77) // 2 = 167
    shapes = _record_shapes(model)
    with torch.no_grad():
        S_r, _, _ = model.conditions(torch.randn(1, 256, 256))
        model.llmn.feature_map(S_r)
        model.llmn.manipulator.conv_in(torch.zeros(1, *LATENT))
    assert _mismatches(shapes) == [f"hlgn hidden tokens: (1, 167, {D_R}) != (n, {HLGN_HIDDEN}, {D_R})"]


def test_paper_world_contract(monkeypatch, paper_cfg):
    from neuropictor.sample import reconstruct

    model = _build(monkeypatch, paper_cfg)
    shapes = _record_shapes(model)
    assert model.encoder.tokens("full") == L_R and model.encoder.width == D_R
    assert len(model.llmn.manipulator.controlnet_down_blocks) == 1 + 2 * 3 + 1  # one zero conv per skip

    # one training step (L_dif + 0.1 L_sem on the trainable parts) on a 256 x 256 map
    # and the latent of a 512 px image
    vae = _small_vae().eval()
    image = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.no_grad():
        z0 = vae.encode(image).latent_dist.mean * vae.config.scaling_factor
    assert tuple(z0.shape[1:]) == LATENT
    maps = torch.randn(1, 256, 256)
    states = torch.randn(1, L_T, D_T)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.unet.parameters())
    optimizer = torch.optim.SGD(trainable, lr=1e-4)  # stateless: AdamW's moments would add 2 GB here
    model.train()
    loss = model(maps, z0, states)
    loss.backward()
    assert torch.isfinite(loss) and set(model.loss_terms) == {"L_dif", "L_sem"}
    # the zero convs start at zero, so on the first step only they (not the copy behind
    # them) get gradients from L_dif; the HLGN gets them through the UNet's cross-attention
    zero_out = model.llmn.manipulator.controlnet_down_blocks[0].weight
    assert zero_out.grad.abs().sum() > 0 and model.hlgn.fmri_to_text[0][0].weight.grad.abs().sum() > 0
    optimizer.step()
    assert zero_out.abs().sum() > 0  # moved off zero

    optimizer.zero_grad(set_to_none=True)
    assert _mismatches(shapes) == []
    assert shapes["ControlNet middle"] == (1, SD_WIDTHS[-1], LATENT[1] // 8, LATENT[2] // 8)
    assert shapes["UNet out"] == (1, *LATENT)

    # one DDIM step with classifier-free guidance (batch 2 through the UNet), then the VAE
    model.eval()
    with torch.no_grad():
        latents = reconstruct(model, model.noise_scheduler, maps, steps=1, guidance=5.0, progress=False)
        image_out = vae.decode(latents / vae.config.scaling_factor).sample
    assert shapes["UNet out"] == (2, *LATENT)
    assert tuple(latents.shape) == (1, *LATENT) and torch.isfinite(latents).all()
    assert tuple(image_out.shape) == (1, 3, 512, 512)
