"""NeuroPictor's model (HLGN, LLMN, assembled model, loss) and sampler on tiny tensors.

The fMRI encoder is a stand-in with the real encoder's interface (encode / tokens / width),
so these tests pin the model's wiring, not the encoder."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from neuropictor.models.foundation import UNetSpec, build_unet
from neuropictor.models.neuropictor import HLGN, LLMN, FeatureTransform, ModelSwitches, NeuroPictor, neuropictor_loss
from neuropictor.sample import decode, reconstruct
from neuropictor.train import TensorBatches, TrainConfig, fit

L_R, D_R, L_T, D_T, SIDE, C = 5, 8, 6, 16, 8, 4


class StandInEncoder(nn.Module):
    """(n, 6, 6) maps -> S^r (n, L_R, D_R) by one linear map; "cls" keeps the first token."""
    width = D_R

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(36, L_R * D_R)

    def tokens(self, output: str = "full") -> int:
        return L_R if output == "full" else 1

    def encode(self, maps: torch.Tensor, output: str = "full") -> torch.Tensor:
        x = self.proj(maps.flatten(1)).reshape(len(maps), L_R, D_R)
        return x if output == "full" else x[:, :1]


def noise_scheduler():
    from neuropictor.models.foundation import noise_schedule

    return noise_schedule("ddpm")


def make_model(layout: dict | None = None, **switches) -> NeuroPictor:
    torch.manual_seed(0)
    unet = build_unet(UNetSpec(channels=(8, 16), heads=2), latent_side=SIDE, latent_channels=C, cross_dim=D_T)
    empty = torch.randn(1, L_T, D_T)
    return NeuroPictor(StandInEncoder(), unet, empty, noise_scheduler(), ModelSwitches(**switches), **(layout or {}))


RELEASED = dict(hlgn_hidden_tokens=5, hlgn_layer_norm=True, llmn_map="features")  # params.paper.yaml's layout


def tiny_batch(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 6, 6, generator=g), torch.randn(n, C, SIDE, SIDE, generator=g),
            torch.randn(n, L_T, D_T, generator=g))


def wake_zero_convs(model: NeuroPictor) -> None:
    """Give the LLMN's zero-initialised output convs weights, as training would."""
    g = torch.Generator().manual_seed(3)
    m = model.llmn.manipulator
    for conv in [*m.controlnet_down_blocks, m.controlnet_mid_block, m.controlnet_cond_embedding.conv_out]:
        with torch.no_grad():
            conv.weight.copy_(0.2 * torch.randn(conv.weight.shape, generator=g))


def test_hlgn_and_feature_transform_shapes_and_zero_aux():
    S = torch.randn(3, L_R, D_R)
    hlgn = HLGN(L_R, D_R, L_T, D_T)
    F_txt, F_sem = hlgn(S)
    assert F_txt.shape == F_sem.shape == (3, L_T, D_T)
    assert torch.equal(hlgn.aux(S), torch.zeros(3, L_T, D_T))  # F^au = 0 at init (zero 1-D conv)
    assert torch.equal(F_sem, F_txt)
    assert HLGN(1, D_R, L_T, D_T)(S[:, :1])[1].shape == (3, L_T, D_T)  # the [CLS]-only encoder output
    assert FeatureTransform(L_R, D_R, C, SIDE)(S).shape == (3, C, SIDE, SIDE)
    assert FeatureTransform(L_R, D_R, C, (2, 3))(S).shape == (3, C, 2, 3)


def test_hlgn_dropout_acts_in_training_only():
    S = torch.randn(4, L_R, D_R)
    torch.manual_seed(0)
    plain = HLGN(L_R, D_R, L_T, D_T)
    torch.manual_seed(0)
    dropped = HLGN(L_R, D_R, L_T, D_T, dropout=0.5)
    # same weights; in evaluation the dropout is the identity, so both read S^r alike
    assert torch.equal(plain.eval()(S)[0], dropped.eval()(S)[0])
    dropped.train()
    a, b = dropped(S)[0], dropped(S)[0]
    assert not torch.equal(a, b) and not torch.equal(a, plain(S)[0])  # fresh masks, off the plain read-out
    model = make_model(layout=dict(hlgn_dropout=0.3))
    assert model.hlgn.dropout.p == 0.3
    assert isinstance(make_model().hlgn.dropout, nn.Identity)  # 0 (as released): no layer at all
    with pytest.raises(ValueError, match="dropout"):
        HLGN(L_R, D_R, L_T, D_T, dropout=1.0)


def test_llmn_adds_nothing_at_init():
    model = make_model()
    maps, z, _ = tiny_batch()
    t = torch.tensor([10, 500, 999])
    with torch.no_grad():
        S_r, F_txt, F_sem = model.conditions(maps)
        down, mid = model.llmn(z, t, F_sem, S_r)
        # one residual per skip connection: conv_in, block 1's layer and downsampler, block 2's layer
        assert len(down) == 1 + 2 + 1 and all(torch.count_nonzero(d) == 0 for d in down)
        assert torch.count_nonzero(mid) == 0
        plain = model.unet(z, t, encoder_hidden_states=F_sem).sample
        assert torch.equal(model.eps(z, t, S_r, F_sem), plain)


def test_released_layout_adds_nothing_at_init_and_learns():
    """The released code's layout (params.paper.yaml): LayerNorm-closed HLGN branches with a
    kernel-3 aux zero conv, and F_0^l at the UNet's first width added after the copy's
    conv_in. At init the model is the frozen UNet; one backward reaches every zero conv."""
    model = make_model(RELEASED, empty_rate=0.0)
    maps, z, _ = tiny_batch()
    t = torch.tensor([10, 500, 999])
    assert isinstance(model.hlgn.fmri_to_text[-1], nn.LayerNorm) and model.hlgn.aux[-1].kernel_size == (3,)
    assert model.hlgn.fmri_to_text[0][0].out_channels == 5
    assert isinstance(model.llmn.manipulator.controlnet_cond_embedding, nn.Identity)
    with torch.no_grad():
        S_r, F_txt, F_sem = model.conditions(maps)
        assert torch.equal(F_sem, F_txt)
        F0 = model.llmn.feature_transform(S_r)
        assert F0.shape == (3, model.unet.config.block_out_channels[0], SIDE, SIDE) and torch.count_nonzero(F0) == 0
        assert torch.equal(model.eps(z, t, S_r, F_sem), model.unet(z, t, encoder_hidden_states=F_sem).sample)
    model.train()
    model.loss(tiny_batch()).backward()
    assert model.llmn.manipulator.controlnet_mid_block.weight.grad.abs().sum() > 0
    assert model.hlgn.aux[-1].weight.grad.abs().sum() > 0
    # the layout is a params choice: an unknown map is refused by name
    with pytest.raises(ValueError, match="LLMN map"):
        make_model(dict(llmn_map="pixels"))


def test_standardised_llmn_input_drops_what_every_scan_shares():
    """llmn_input "standardised": E_ft reads S^r standardised per feature over the batch, so an
    offset every scan shares (the encoder's positional part) cannot reach F_0^l, however large;
    at evaluation the running statistics stand in for the batch's and travel in the checkpoint."""
    model = make_model(dict(llmn_input="standardised"))
    raw = make_model()
    S = torch.randn(16, L_R, D_R)
    shared = 50 * torch.randn(1, L_R, D_R)
    model.train()
    F0, F0_shifted = model.llmn.feature_map(S), model.llmn.feature_map(S + shared)
    assert torch.allclose(F0, F0_shifted, atol=1e-3)
    assert not torch.allclose(raw.llmn.feature_map(S), raw.llmn.feature_map(S + shared), atol=1e-3)
    state = model.trainable_state_dict()
    assert "llmn.input_norm.norm.running_mean" in state and state["llmn.input_norm.norm.running_mean"].abs().sum() > 0
    fresh = make_model(dict(llmn_input="standardised"))
    fresh.load_trainable(state)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model.llmn.feature_map(S), fresh.llmn.feature_map(S))
    with pytest.raises(ValueError, match="LLMN input"):
        make_model(dict(llmn_input="zscore"))


def test_control_scale_alpha_scales_the_llmn():
    model = make_model()
    wake_zero_convs(model)
    maps, z, _ = tiny_batch()
    t = torch.tensor([10, 500, 999])
    with torch.no_grad():
        S_r, _, F_sem = model.conditions(maps)
        down1, mid1 = model.llmn(z, t, F_sem, S_r, 1.0)
        down_half, mid_half = model.llmn(z, t, F_sem, S_r, 0.5)
        assert torch.count_nonzero(mid1) > 0
        torch.testing.assert_close(mid_half, 0.5 * mid1)
        for a, b in zip(down_half, down1):
            torch.testing.assert_close(a, 0.5 * b)
        plain = model.unet(z, t, encoder_hidden_states=F_sem).sample
        assert torch.equal(model.eps(z, t, S_r, F_sem, alpha=0.0), plain)
        assert not torch.allclose(model.eps(z, t, S_r, F_sem, alpha=1.0), plain, atol=1e-4)


def test_gradients_reach_encoder_hlgn_llmn_not_unet():
    model = make_model(empty_rate=0.0)
    model.train()
    assert not model.unet.training  # the frozen UNet stays in eval mode under fit's train()
    model.loss(tiny_batch()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.unet.parameters())
    for part in (model.encoder, model.hlgn.fmri_to_text):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # at init only the zero convs themselves learn (ControlNet / zero-conv behaviour)
    assert model.hlgn.aux[-1].weight.grad.abs().sum() > 0
    assert model.llmn.manipulator.controlnet_mid_block.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.llmn.parameters())


def test_semantic_loss_weight():
    model = make_model()
    maps, z0, text = tiny_batch()
    # Eq. 3 as the released code computes it: an element-wise mean (16 dims off by 1 -> 1, not 16)
    assert float(model.semantic_loss(torch.zeros(2, L_T, D_T), torch.ones(2, L_T, D_T))) == 1.0
    half = torch.ones(2, L_T, D_T)
    half[..., : D_T // 2] = 0  # half the dims off by 1 -> 0.5 whatever the width
    assert float(model.semantic_loss(half, torch.ones(2, L_T, D_T))) == 0.5
    # as the paper writes it: the squared L2 norm per token, a sum over the width (D_T times the mean)
    model.switches = dataclasses.replace(model.switches, sem_loss="sum")
    assert float(model.semantic_loss(half, torch.ones(2, L_T, D_T))) == D_T / 2
    model.switches = dataclasses.replace(model.switches, sem_loss="mean")
    with pytest.raises(ValueError, match="sem_loss"):
        dataclasses.replace(model.switches, sem_loss="l1")

    def loss(m, states):
        torch.manual_seed(5)
        with torch.no_grad():
            return m.loss((maps, z0, states))

    with_sem = loss(model, text)
    model.switches = dataclasses.replace(model.switches, lambda_sem=0.0)
    without = loss(model, text)
    assert torch.equal(without, loss(model, torch.full_like(text, float("nan"))))  # captions unused
    with torch.no_grad():
        F_txt = model.conditions(maps)[1]
    torch.testing.assert_close(with_sem - without, 0.1 * model.semantic_loss(F_txt, text))


def test_diffusion_loss_regresses_the_velocity_for_a_v_prediction_unet():
    from neuropictor.models.foundation import noise_schedule

    model = make_model(lambda_sem=0.0, empty_rate=0.0)
    maps, z0, text = tiny_batch()
    model.noise_scheduler = noise_schedule("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    torch.manual_seed(5)
    with torch.no_grad():
        got = model.loss((maps, z0, text))
    # the same draws by hand: noise, then t, as the forward pass takes them
    torch.manual_seed(5)
    torch.rand(len(z0))  # the empty-caption draw
    noise = torch.randn_like(z0)
    t = torch.randint(0, 1000, (len(z0),))
    sched = model.noise_scheduler
    with torch.no_grad():
        S_r, _, F_sem = model.conditions(maps)
        out = model.eps(sched.add_noise(z0, noise, t), t, S_r, F_sem)
    torch.testing.assert_close(got, ((out - sched.get_velocity(z0, noise, t)) ** 2).mean())
    assert not torch.allclose(got, ((out - noise) ** 2).mean())


def test_switches_change_the_model():
    full = make_model()
    names = {n for n, p in full.named_parameters() if p.requires_grad}
    assert any(n.startswith("hlgn.aux.") for n in names) and any(n.startswith("llmn.") for n in names)

    no_aux = make_model(use_aux=False)
    assert {n for n, p in no_aux.named_parameters() if p.requires_grad} == {
        n for n in names if not n.startswith("hlgn.aux.")}

    no_llmn = make_model(use_llmn=False)
    assert no_llmn.llmn is None
    assert not any(n.startswith("llmn.") for n, _ in no_llmn.named_parameters())
    maps, z, _ = tiny_batch()
    with torch.no_grad():
        S_r, _, F_sem = no_llmn.conditions(maps)
        assert torch.equal(no_llmn.eps(z, 7, S_r, F_sem), no_llmn.unet(z, 7, encoder_hidden_states=F_sem).sample)

    frozen = make_model(encoder_trainable=False)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert not frozen.train().encoder.training

    cls = make_model(encoder_output="cls")
    assert cls.hlgn.fmri_to_text[0][0].in_channels == 1
    assert cls.conditions(maps)[2].shape == (3, L_T, D_T)

    with pytest.raises(ValueError, match="encoder_output"):
        ModelSwitches(encoder_output="mean")


def test_trainable_checkpoint_round_trip():
    model = make_model()
    wake_zero_convs(model)
    state = model.trainable_state_dict()
    assert state and not any(k.startswith("unet.") for k in state) and "empty_states" not in state
    fresh = make_model()
    fresh.load_trainable(state)
    maps, z, _ = tiny_batch()
    with torch.no_grad():
        S_r, _, F_sem = model.conditions(maps)
        torch.testing.assert_close(fresh.eps(z, 3, *fresh.conditions(maps)[::2]), model.eps(z, 3, S_r, F_sem))

    # refining from a multi-subject pretraining without the auxiliary encoder
    pretrained = make_model(use_aux=False).trainable_state_dict()
    with pytest.raises(ValueError, match="missing"):
        fresh.load_trainable(pretrained)
    missing = fresh.load_trainable(pretrained, strict=False)
    assert missing and all(k.startswith("hlgn.aux.") for k in missing)
    with pytest.raises(ValueError, match="unexpected"):
        make_model(use_llmn=False).load_trainable(state)


def test_fit_trains_only_the_trainable_parts():
    model = make_model()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    hlgn_before = model.hlgn.fmri_to_text[1][0].weight.clone()
    maps, z0, text = tiny_batch(8)
    hist = fit(model, neuropictor_loss, TensorBatches(maps, z0, text),
               TrainConfig(steps=3, batch_size=4, warmup=1, log_every=1))
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    # the two terms are logged apart and add up to the loss (lambda_sem of the switches)
    lam = model.switches.lambda_sem
    assert all(abs(h["L_dif"] + lam * h.get("L_sem", 0.0) - h["loss"]) < 1e-4 * max(1.0, h["loss"]) for h in hist)
    assert ("L_sem" in hist[0]) == bool(lam)
    assert all(torch.equal(v, unet_before[k]) for k, v in model.unet.state_dict().items())
    assert not torch.equal(model.hlgn.fmri_to_text[1][0].weight, hlgn_before)


def manual_ddim(model, maps, steps, seed, guidance, alpha):
    """Reference sampler: separate unconditional / conditional UNet calls, no batching."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(model.noise_scheduler.config, clip_sample=False)
    ddim.set_timesteps(steps)
    z = torch.randn((len(maps), C, SIDE, SIDE), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        S_r, _, F_sem = model.conditions(maps)
        empty = model.empty_states.expand_as(F_sem)
        for t in ddim.timesteps:
            eps = model.eps(z, t, S_r, F_sem, alpha)
            if guidance != 1:
                eps_u = model.eps(z, t, S_r, empty, alpha)
                eps = eps_u + guidance * (eps - eps_u)
            z = ddim.step(eps, t, z).prev_sample
    return z


def test_reconstruct_guidance_seed_and_swap():
    model = make_model()
    wake_zero_convs(model)
    sched = noise_scheduler()
    maps, other = tiny_batch(2)[0], tiny_batch(2, seed=9)[0]

    def run(**kw):
        return reconstruct(model, sched, kw.pop("m", maps), steps=3, progress=False, **kw)

    a = run(seed=0)
    assert a.shape == (2, C, SIDE, SIDE) and torch.isfinite(a).all()
    assert torch.equal(a, run(seed=0)) and not torch.allclose(a, run(seed=1))
    torch.testing.assert_close(run(seed=0, batch_size=1), a, atol=1e-5, rtol=1e-4)
    assert torch.equal(run(guidance=1.0, alpha=0.7), manual_ddim(model, maps, 3, 0, 1.0, 0.7))
    torch.testing.assert_close(a, manual_ddim(model, maps, 3, 0, 5.0, 1.0), atol=1e-5, rtol=1e-4)
    # semantic swap (Fig. 2): F^sem from `semantic_maps`, control from `maps`
    assert torch.equal(run(semantic_maps=maps), a)
    swapped = run(semantic_maps=other)
    assert not torch.allclose(swapped, a) and not torch.allclose(swapped, run(m=other))
    assert torch.equal(run(semantic_maps=other, alpha=0.0), run(m=other, alpha=0.0))  # alpha 0: semantics only


def test_decode_to_unit_range():
    from neuropictor.models.foundation import VAESpec, build_vae

    torch.manual_seed(0)
    vae = build_vae(VAESpec(channels=(8, 16), norm_groups=4), image_size=16).eval()
    z = torch.randn(2, C, SIDE, SIDE)
    images = decode(vae, z, batch_size=1)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        ref = vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5
    torch.testing.assert_close(images, ref.clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_lambda_low_regresses_the_llmn_map_onto_the_latent_and_is_off_by_default():
    """L_low (params neuropictor.lambda_low, this world's addition) adds lambda_low x the MSE
    between E_ft's map F_0^l and z0; at 0 the loss is exactly the paper's."""
    import torch.nn.functional as F

    batch = tiny_batch(4)
    off = make_model()
    on = make_model(lambda_low=0.5)
    on.load_state_dict(off.state_dict())
    torch.manual_seed(5)
    l_off = off(*batch)
    assert "L_low" not in off.loss_terms
    torch.manual_seed(5)
    l_on = on(*batch)
    with torch.no_grad():
        expected = F.mse_loss(on.llmn.feature_map(on.conditions(batch[0])[0]), batch[1])
    assert torch.allclose(on.loss_terms["L_low"], expected, rtol=1e-5)
    assert torch.allclose(on.loss_terms["L_dif"], off.loss_terms["L_dif"])
    assert torch.allclose(l_on, l_off + 0.5 * on.loss_terms["L_low"], rtol=1e-5)
    # its gradient reaches E_ft even while the ControlNet copy's zero convs still block L_dif's
    on.zero_grad()
    torch.manual_seed(5)
    on(*batch).backward()
    grads = [p.grad for p in on.llmn.feature_transform.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="lambda_low"):
        make_model(RELEASED, lambda_low=0.1)
    with pytest.raises(ValueError, match="lambda_low must be >= 0"):
        ModelSwitches(lambda_low=-1.0)
