"""The guide-token flatmap MAE (Sec. 3.1) on 16 x 16 maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuropictor.io import DataError
from neuropictor.models.fmri_encoder import (EncoderSpec, FlatmapMAE, load_encoder, mae_loss,
                                             recon_correlation, save_encoder)
from neuropictor.train import TensorBatches, TrainConfig, fit

SPEC = EncoderSpec(image_size=16, patch=4, width=32, depth=1, heads=4, decoder_width=24, decoder_depth=1)


def _mask() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    return (yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 7.5 ** 2  # a disc: the corners are off cortex


def _maps(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random maps: 4 x 4 noise upsampled to 16 x 16, unit variance."""
    g = torch.Generator().manual_seed(seed)
    maps = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=16, mode="bicubic", align_corners=False)[:, 0]
    return (maps - maps.mean((1, 2), keepdim=True)) / maps.std((1, 2), keepdim=True)


def _model(seed: int = 0, mask=True) -> FlatmapMAE:
    torch.manual_seed(seed)
    return FlatmapMAE(SPEC, _mask() if mask else None)


def test_shapes_and_bad_input():
    model = _model()
    maps = _maps(3)
    assert model.encode(maps, "full").shape == (3, 1 + 16, 32) == (3, model.tokens("full"), model.width)
    assert model.encode(maps[:, None], "cls").shape == (3, 1, 32) == (3, model.tokens("cls"), model.width)
    assert model(maps).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="'full', 'cls'"):
        model.encode(maps, "mean")
    with pytest.raises(ValueError, match="image_size = 16"):
        model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="expected \\(16, 16\\)"):
        FlatmapMAE(SPEC, torch.ones(8, 8, dtype=torch.bool))


def test_reconstruction_depends_on_the_guide_token_only():
    model = _model()
    maps = _maps(2)
    recon = model(maps)
    torch.testing.assert_close(recon, model.decode(model.encode(maps, "cls")[:, 0]))
    # gradient of the reconstruction w.r.t. the encoder's output tokens: zero on every patch token
    seen = {}

    def keep(module, inputs, out):
        out.retain_grad()
        seen["tokens"] = out

    handle = model.encoder_norm.register_forward_hook(keep)
    model(maps).square().sum().backward()
    handle.remove()
    grad = seen["tokens"].grad  # (n, 1 + P, width)
    assert grad[:, 1:].abs().max() == 0
    assert (grad[:, 0].abs().sum(dim=1) > 0).all()
    # and the guide token does carry the input: another map, another reconstruction
    assert (model(maps[:1]) - model(maps[1:])).abs().max() > 1e-4


def test_mae_loss_is_mse_over_valid_pixels_only():
    model = _model()
    maps = _maps(4)
    mask = _mask()
    loss = mae_loss(model, (maps,))
    expected = ((model(maps) - maps)[:, mask] ** 2).mean()
    torch.testing.assert_close(loss, expected)
    # garbage off cortex (in what the encoder sees and in the target) changes nothing ...
    junk = maps.clone()
    junk[:, ~mask] = 1e3
    torch.testing.assert_close(mae_loss(model, (junk,)), loss)
    # ... while one on-cortex pixel does
    moved = maps.clone()
    moved[:, 8, 8] += 5.0
    assert abs(float(mae_loss(model, (moved,)).detach() - loss.detach())) > 1e-3
    # reconstructions are zero off cortex
    assert model(maps)[:, ~mask].abs().max() == 0


def test_short_fit_lowers_the_loss():
    model = _model()
    maps = _maps(8)
    zero_guess = float((maps[:, _mask()] ** 2).mean())  # the loss of predicting a blank map
    with torch.no_grad():
        before = float(mae_loss(model, (maps,)))
    fit(model, mae_loss, TensorBatches(maps), TrainConfig(steps=200, batch_size=8, lr=5e-3, warmup=5, log_every=50))
    with torch.no_grad():
        after = float(mae_loss(model, (maps,)))
        r = recon_correlation(model(maps), maps, _mask())
    # beating the blank map by 2x means the guide token carries each map (seen: 0.26 x, r 0.86)
    assert after < 0.5 * zero_guess and after < 0.5 * before, (before, zero_guess, after)
    assert r.mean() > 0.7, r


def test_recon_correlation_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(5, 16, 16)), rng.normal(size=(5, 16, 16))
    target[2] = 2 * pred[2] + 1  # r = 1 exactly
    mask = _mask().numpy()
    r = recon_correlation(torch.from_numpy(pred), target, mask)
    loop = [np.corrcoef(p[mask], t[mask])[0, 1] for p, t in zip(pred, target)]
    np.testing.assert_allclose(r, loop, rtol=1e-10)
    assert abs(r[2] - 1) < 1e-12
    # no mask: every pixel counts
    np.testing.assert_allclose(recon_correlation(pred, target, None),
                               [np.corrcoef(p.ravel(), t.ravel())[0, 1] for p, t in zip(pred, target)])


@pytest.mark.parametrize("with_mask", [True, False])
def test_save_load_round_trip(tmp_path, with_mask):
    model = _model(seed=1, mask=with_mask).eval()
    save_encoder(tmp_path / "encoder", model, SPEC)
    loaded = load_encoder(tmp_path / "encoder")
    assert loaded.spec == SPEC and (loaded.mask is not None) == with_mask
    if with_mask:
        assert torch.equal(loaded.mask, _mask())
    maps = _maps(2, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.encode(maps, "full"), model.encode(maps, "full"))
        assert torch.equal(loaded(maps), model(maps))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # nothing half-written left


def test_load_missing_encoder_names_the_path_and_the_stage(tmp_path):
    with pytest.raises(DataError, match="dvc repro encoder") as err:
        load_encoder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_split_half_readout_reads_what_repeats():
    """A perfect rebuild keeps exactly the split-half correlation; a rebuild that returns a
    fixed map carries none of it; bad shapes are errors."""
    from neuropictor.models.fmri_encoder import split_half_readout, summarise_split_half

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(20, 1, 8, 8))
    halves = (signal + rng.normal(size=(20, 2, 8, 8))).astype(np.float32)  # same signal, own noise
    perfect = split_half_readout(lambda maps: maps, halves)
    np.testing.assert_allclose(perfect["r(recon(A), A)"], 1.0, atol=1e-6)
    np.testing.assert_allclose(perfect["r(recon(A), B)"], perfect["split-half r(A, B)"])
    assert 0.3 < np.median(perfect["split-half r(A, B)"]) < 0.7  # signal and noise of equal size
    fixed = rng.normal(size=(8, 8)).astype(np.float32)
    blind = split_half_readout(lambda maps: np.broadcast_to(fixed, maps.shape), halves)
    assert abs(np.median(blind["r(recon(A), B)"])) < 0.15
    summary = summarise_split_half([perfect, perfect])
    assert summary["n"] == 40 and summary["share of the repeatable signal kept"] == pytest.approx(1.0)
    assert summarise_split_half([]) == {}
    with pytest.raises(ValueError, match=r"\(n, 2, H, W\)"):
        split_half_readout(lambda maps: maps, halves[:, :1])
