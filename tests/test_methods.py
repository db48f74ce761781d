"""The methods' building blocks: every nonlinear decoder learns a mapping it can represent,
the CS292F ROI graph is what the report describes, reconstructions round-trip on disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuropictor.config import DecoderFit, ParamsError, load_params
from neuropictor.io import DataError
from neuropictor.methods.base import Standardizer, fit_decoder, load_reconstructions, save_reconstructions
from neuropictor.methods.cs292f import GCNDecoder, VAEDecoder, image_cnn, node_features, roi_graph, vae_loss
from neuropictor.methods.gru import BiGRUDecoder


def regression(n=320, voxels=60, out=12, seed=0):
    """Targets a fixed linear map of the voxels plus a little noise, standardised."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, voxels, generator=g)
    y = x @ torch.randn(voxels, out, generator=g) / voxels ** 0.5 + 0.1 * torch.randn(n, out, generator=g)
    return x, Standardizer(y)(y)


FIT = DecoderFit(lr=0.001, batch_size=32, epochs=100, patience=15)  # the deep CNN plateaus before it drops


@pytest.mark.parametrize("kind", ["cnn", "vae", "gru"])
def test_decoders_learn_a_linear_map(kind):
    x, y = regression()
    model = {"cnn": lambda: image_cnn(x.shape[1], y.shape[1], channels=4),
             "vae": lambda: VAEDecoder(x.shape[1], y.shape[1], latent=64, hidden=128),
             "gru": lambda: BiGRUDecoder(x.shape[1], y.shape[1], chunk=8, hidden=32)}[kind]()
    loss = vae_loss(1.0, 0.001) if kind == "vae" else None
    _, record = fit_decoder(model, x, y, FIT, seed=0, val_share=0.2, **({"loss_fn": loss} if loss else {}))
    # predicting the mean scores 1.0 on standardised targets
    assert record["best_val_mse"] < 0.5, record
    assert record["val_curve"][0] > record["best_val_mse"]


def test_gcn_learns_from_roi_nodes():
    x, y = regression(voxels=48)
    x = x + torch.randn(len(x), 1, generator=torch.Generator().manual_seed(1))  # a shared signal: nodes correlate
    nodes = [np.arange(0, 16), np.arange(16, 32), np.arange(32, 48)]
    edge_index, weight, _ = roi_graph(x.numpy(), nodes, threshold=0.5)
    assert edge_index.T.tolist() == [[0, 1], [0, 2], [1, 2]]
    model = GCNDecoder(16, y.shape[1], edge_index, weight, n_nodes=3, width=64, channels=4)
    _, record = fit_decoder(model, node_features(x.numpy(), nodes, 16), y, FIT, seed=0, val_share=0.2)
    assert record["best_val_mse"] < 0.6, record


def test_roi_graph_is_thresholded_upper_triangular_without_self_loops():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(500, 1))
    x = np.hstack([shared + 0.3 * rng.normal(size=(500, 4)),   # node 0 (V1)
                   shared + 0.3 * rng.normal(size=(500, 4)),   # node 1 (V2): r ~ 0.98 with V1
                   rng.normal(size=(500, 4))])                 # node 2: unrelated
    nodes = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]
    edge_index, weight, r = roi_graph(x, nodes, threshold=0.5)
    assert edge_index.T.tolist() == [[0, 1]]  # bottom-up only: no (1, 0), no (i, i), nothing to node 2
    assert weight[0] == pytest.approx(r[0, 1]) and r[0, 1] > 0.5 > abs(r[0, 2])
    feats = node_features(x[:3], [np.arange(0, 4), np.arange(4, 6)], 4)
    assert feats.shape == (3, 2, 4) and torch.all(feats[:, 1, 2:] == 0)  # zero-padded to a common length


def test_takagi_ridge_recovers_a_linear_map_and_turns_text_off_without_captions():
    from neuropictor.methods import takagi
    from neuropictor.methods.base import SubjectData

    rng = np.random.default_rng(0)
    x, x_test = rng.standard_normal((200, 30)).astype(np.float32), rng.standard_normal((10, 30)).astype(np.float32)
    w_z, w_c = rng.standard_normal((30, 2 * 3 * 3)), rng.standard_normal((30, 4 * 5))
    z = torch.from_numpy(x @ w_z).float().reshape(200, 2, 3, 3)
    c = torch.from_numpy(x @ w_c).float().reshape(200, 4, 5)
    none = torch.zeros(0)
    data = SubjectData(1, np.arange(200), np.arange(10), x, x_test, none, none, z, none, c, None, None)
    cfg = load_params(overrides={"prep.ridge.alphas": [1e-3, 1.0, 100.0]})
    decoded = takagi.fit_decode(cfg, data)
    assert decoded.z.shape == (10, 2, 3, 3) and decoded.c.shape == (10, 4, 5)
    np.testing.assert_allclose(decoded.z.flatten(1).numpy(), x_test @ w_z, atol=0.05)
    np.testing.assert_allclose(decoded.c.flatten(1).numpy(), x_test @ w_c, atol=0.05)
    data.c_train = None  # no captions: no text condition, so the sampler stops at stage 1
    assert takagi.fit_decode(cfg, data).c is None


def test_standardizer_round_trip():
    y = torch.randn(10, 4, 3, 3) * 5 + 2
    s = Standardizer(y)
    assert s(y).mean().abs() < 1e-5
    assert torch.allclose(s.inverse(s(y)), y, atol=1e-5)


def test_reconstructions_round_trip_and_missing_file_is_named(tmp_path):
    cfg = load_params(overrides={"paths.reconstructions": str(tmp_path)})
    images = torch.rand(3, 3, 8, 8)
    c = torch.randn(3, 5, 4)
    path = save_reconstructions(cfg, "takagi", 1, np.array([7, 8, 9]), images, c)
    assert path == tmp_path / "takagi" / "subj01.npz"
    back = load_reconstructions(cfg, "takagi", 1)
    assert back["nsd_id"].tolist() == [7, 8, 9]
    assert torch.allclose(back["images"], images, atol=1 / 255) and torch.allclose(back["c"], c, atol=1e-2)
    with pytest.raises(DataError, match="gru.*subj02.npz|subj02.npz"):
        load_reconstructions(cfg, "gru", 2)


def test_unknown_method_and_too_many_groups_are_params_errors():
    with pytest.raises(ParamsError, match="unknown method"):
        load_params(overrides={"methods.rows": ["takagi", "mindeye"]})
    with pytest.raises(ParamsError, match="latent groups"):
        load_params(overrides={"methods.gru.study_groups": 40})
