"""The one sampler (`neuropictor.sample`) and NeuralDiffuser's feature guidance on a tiny,
untrained foundation: the guidance gradient against finite differences, kappa = 0 against
unguided sampling (exactly), and unguided img2img against diffusers' own pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuropictor.methods import neuraldiffuser as nd
from neuropictor.models import foundation as fd
from neuropictor.models.tokenizer import build_tokenizer
from neuropictor.sample import Guide, clean_estimate, ddim_of, guidance_gradient, guided_output, img2img

LAYERS, WEIGHTS = (1, 2), (1.5, 1.2)


@pytest.fixture(scope="module")
def tiny():
    """A random tiny pipeline (32 px images, 16 x 16 latents) and a two-block image tower."""
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    captions = ["a red circle", "a blue square", "a green cross on grey"]
    tok = build_tokenizer(captions, max_length=8)
    clip = fd.build_clip(fd.CLIPSpec(width=16, layers=2, heads=2, embed_dim=8, max_length=8, patch=8), len(tok),
                         image_size=32).eval()
    vae = fd.build_vae(fd.VAESpec(channels=(8, 8), norm_groups=4), 32).eval()
    unet = fd.build_unet(fd.UNetSpec(channels=(8, 16), heads=2), 16, 4, 16).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=fd.text_encoder_of(clip), tokenizer=tok, unet=unet,
                                   scheduler=fd.noise_schedule("ddim", prediction_type="v_prediction", zero_terminal_snr=True),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    for module in (vae, clip, unet, pipe.text_encoder):
        module.requires_grad_(False)
    from neuropictor.decoding import caption_states

    with torch.no_grad():
        states = caption_states(pipe, captions)
    return pipe, clip.vision_model, states


def _targets(tower, n, seed=1):
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return nd.layer_features(tower, images, LAYERS)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_guidance_gradient_matches_finite_differences(tiny, kind):
    pipe, tower, _ = tiny
    vae, tower = pipe.vae.double(), tower.double()
    try:
        sched = ddim_of(fd.noise_schedule("ddim", prediction_type=kind), 10)
        g = [t.double() for t in _targets(tower, 2)]
        guide = Guide(nd.feature_loss(vae, tower, g, LAYERS, WEIGHTS), scale=1.0)
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
        out = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)  # the denoiser's output, held fixed
        t = sched.timesteps[3]
        grad = guidance_gradient(sched, guide, x, out, t, slice(0, 2))

        def loss(xx):
            with torch.no_grad():
                return float(guide.loss(clean_estimate(sched, xx, out, t), slice(0, 2)).sum())

        h = 1e-4
        for _ in range(3):
            d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            fd_slope = (loss(x + h * d) - loss(x - h * d)) / (2 * h)
            assert float((grad * d).sum()) == pytest.approx(fd_slope, rel=1e-5, abs=1e-9)
        assert grad.abs().sum() > 0
    finally:
        vae.float(), tower.float()


def test_a_guided_step_lowers_the_loss_of_the_clean_estimate(tiny):
    pipe, tower, _ = tiny
    sched = ddim_of(pipe.scheduler, 10)
    g = _targets(tower, 3)
    guide = Guide(nd.feature_loss(pipe.vae, tower, g, LAYERS, WEIGHTS), scale=0.5)
    gen = torch.Generator().manual_seed(3)
    x, out = torch.randn(3, 4, 16, 16, generator=gen), torch.randn(3, 4, 16, 16, generator=gen)
    t = sched.timesteps[4]
    rows = slice(0, 3)
    with torch.no_grad():
        before = guide.loss(clean_estimate(sched, x, out, t), rows)
        after = guide.loss(clean_estimate(sched, x, guided_output(sched, guide, x, out, t, rows), t), rows)
    assert (after < before).all(), (before, after)


def test_zero_snr_first_step_is_left_unguided(tiny):
    pipe, tower, _ = tiny
    sched = ddim_of(pipe.scheduler, 10)  # zero terminal SNR: alpha_bar = 0 at the first step
    assert float(sched.alphas_cumprod[int(sched.timesteps[0])]) == 0
    guide = Guide(nd.feature_loss(pipe.vae, tower, _targets(tower, 1), LAYERS, WEIGHTS), scale=1.0)
    x, out = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    assert torch.equal(guided_output(sched, guide, x, out, sched.timesteps[0], slice(0, 1)), out)


def test_guided_share_of_the_steps():
    guide = Guide(lambda x, rows: x.sum(), scale=1.0, share=0.2)
    assert guide.steps(18) == 4 and guide.steps(25) == 5 and guide.steps(10) == 2
    assert Guide(guide.loss, scale=0.0, share=0.2).steps(18) == 0
    assert Guide(guide.loss, scale=1.0, share=1.0).steps(18) == 18


def test_kappa_zero_reproduces_unguided_sampling_exactly(tiny):
    pipe, tower, states = tiny
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    g = _targets(tower, 3)
    kw = dict(strength=0.75, steps=8, guidance=5.0, seed=7)
    plain = img2img(pipe, z, states, **kw)
    zero = img2img(pipe, z, states, guide=Guide(nd.feature_loss(pipe.vae, tower, g, LAYERS, WEIGHTS), scale=0.0), **kw)
    assert torch.equal(plain, zero)
    moved = img2img(pipe, z, states, guide=Guide(nd.feature_loss(pipe.vae, tower, g, LAYERS, WEIGHTS), scale=50.0),
                    **kw)
    assert (moved - plain).abs().max() > 1e-3
    # batches do not change the draw: all noise comes from one generator up front
    torch.testing.assert_close(img2img(pipe, z, states, batch_size=2, **kw), plain, rtol=0, atol=1e-5)


def test_unguided_img2img_is_diffusers_img2img_pipeline(tiny):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe, _, states = tiny
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    ours = img2img(pipe, z, states, strength=0.6, steps=10, guidance=3.0, seed=11)
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    from neuropictor.decoding import caption_states

    with torch.no_grad():
        empty = caption_states(pipe, [""]).expand(3, -1, -1)
    theirs = i2i(image=z, prompt_embeds=states, negative_prompt_embeds=empty, strength=0.6, num_inference_steps=10,
                 guidance_scale=3.0, generator=torch.Generator().manual_seed(11), output_type="pt").images
    torch.testing.assert_close(ours, theirs.float().clamp(0, 1), rtol=0, atol=1e-5)


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    assert nd.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    assert nd.frechet_distance(x, x + 1) == pytest.approx(6, rel=1e-6)  # the squared mean shift; same covariance


def test_layer_features_name_bad_layers(tiny):
    _, tower, _ = tiny
    with pytest.raises(ValueError, match="blocks 1..2"):
        nd.layer_features(tower, torch.rand(1, 3, 32, 32), (1, 3))
    with pytest.raises(ValueError, match="2 target layers, 2 layers and 1 weights"):
        nd.feature_loss(None, tower, _targets(tower, 1), LAYERS, (1.0,))


def test_neuraldiffuser_params_are_checked(tmp_path):
    from neuropictor.config import ParamsError, load_params

    for overrides, match in [({"methods.neuraldiffuser.weights": [1.0]}, "one weight per hooked layer"),
                             ({"methods.neuraldiffuser.kappa_candidates": [1.0, 2.0]}, "include 0"),
                             ({"methods.neuraldiffuser.guided_rows": ["nope"]}, "unknown row"),
                             ({"methods.neuraldiffuser.eta": 0.0}, r"\(0, 1\]")]:
        with pytest.raises(ParamsError, match=match):
            load_params("params.yaml", overrides)
    assert np.isclose(load_params("params.yaml").methods.neuraldiffuser.eta, 0.2)
