"""CS292F nonlinear decoders (seed 003): a 1-D CNN from higher visual voxels to the caption
states (first `text_tokens` tokens, the report's token reduction), and three decoders from
early visual voxels (V1-hV4) to the VAE latent z: a 1-D CNN, a VAE with an fMRI
reconstruction loss, and a ChebNet GCN (torch-geometric `ChebConv`) over an ROI graph.
Each trains with Adam on MSE, up to 100 epochs, early stopping (patience 5) on a held-out
share of the training split; learning rates and batch sizes from the report's Table 2.
The best latent decoder (validation MSE; the report picked on its test set) and the text
CNN feed img2img through the foundation pipeline.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import Settings
from .base import EARLY_VISUAL, Decoded, Standardizer, SubjectData, fit_decoder, predict

LATENT_DECODERS = ("cnn", "vae", "gcn")


# --------------------------------------------------------------------------- 1-D CNNs
class ResBlock1d(nn.Module):
    def __init__(self, channels: int, kernel: int, convs: int):
        super().__init__()
        layers = []
        for i in range(convs):
            layers += [nn.Conv1d(channels, channels, kernel, padding=kernel // 2)]
            if i < convs - 1:
                layers += [nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return torch.relu(x + self.body(x))


class CNNDecoder(nn.Module):
    """Conv1D (kernel 1) -> residual blocks -> Conv1D (kernel 1) -> three fully connected layers;
    ReLU after every layer but the last. Text: 3 blocks of 3 convs (kernel 7), hidden 1024, 2048;
    image: 2 blocks of 2 convs (kernel 11), hidden 512, 512."""

    def __init__(self, n_voxels: int, out: int, channels: int, blocks: int, convs: int, kernel: int,
                 hidden: tuple[int, int], squeeze: int = 4):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv1d(1, channels, 1), nn.ReLU(),
                                   *[ResBlock1d(channels, kernel, convs) for _ in range(blocks)],
                                   nn.Conv1d(channels, squeeze, 1), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(n_voxels * squeeze, hidden[0]), nn.ReLU(),
                                nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], out))

    def forward(self, x):
        return self.fc(self.convs(x[:, None]).flatten(1))


def text_cnn(n_voxels: int, out: int, channels: int) -> CNNDecoder:
    return CNNDecoder(n_voxels, out, channels, blocks=3, convs=3, kernel=7, hidden=(1024, 2048))


def image_cnn(n_voxels: int, out: int, channels: int) -> CNNDecoder:
    return CNNDecoder(n_voxels, out, channels, blocks=2, convs=2, kernel=11, hidden=(512, 512))


# --------------------------------------------------------------------------- VAE
class VAEDecoder(nn.Module):
    """Encoder: two fully connected layers with a LeakyReLU -> mean and log-variance; decoder:
    three blocks (fully connected, BatchNorm1d, LeakyReLU) with skip connections -> the image
    latent; a linear head reconstructs the fMRI from the sample (its extra loss)."""

    def __init__(self, n_voxels: int, out: int, latent: int = 256, hidden: int = 1024):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_voxels, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * latent))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(latent, latent), nn.BatchNorm1d(latent),
                                                   nn.LeakyReLU(0.2)) for _ in range(3)])
        self.out = nn.Linear(latent, out)
        self.fmri = nn.Linear(latent, n_voxels)

    def _decode(self, h):
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)

    def forward(self, x):  # training: (prediction, fMRI reconstruction, KL)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        h = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
        return self._decode(h), self.fmri(h), kl

    def predict(self, x):
        return self._decode(self.encoder(x).chunk(2, dim=1)[0])


def vae_loss(fmri_weight: float, kl_weight: float):
    def loss(model, x, y):
        pred, rec, kl = model(x)
        return (nn.functional.mse_loss(pred, y) + fmri_weight * nn.functional.mse_loss(rec, x)
                + kl_weight * kl / y.shape[1])
    return loss


# --------------------------------------------------------------------------- ChebNet GCN
NODES = (("V1",), ("V2",), ("V3", "hV4"))  # the report's graph: V1, V2, V3+V4


def roi_graph(x_train: np.ndarray, node_columns: list[np.ndarray], threshold: float):
    """Edges from trial-averaged functional connectivity: each node's mean voxel response per
    trial, Pearson r between nodes over the training trials, kept where r > `threshold`,
    no self-loops, upper-triangular only (bottom-up: V1 -> V2 -> V3+V4).
    -> (edge_index (2, E) long, edge_weight (E,), the full r matrix)."""
    series = np.stack([x_train[:, cols].mean(1) for cols in node_columns])
    r = np.corrcoef(series)
    keep = np.triu(r > threshold, k=1)
    src, dst = np.nonzero(keep)
    return (torch.as_tensor(np.stack([src, dst]), dtype=torch.long),
            torch.as_tensor(r[src, dst], dtype=torch.float32), r)


def node_features(x: np.ndarray, node_columns: list[np.ndarray], length: int) -> torch.Tensor:
    """(n, n_voxels) -> (n, nodes, length): each ROI's (z-scored) voxels, zero-padded."""
    out = np.zeros((len(x), len(node_columns), length), np.float32)
    for i, cols in enumerate(node_columns):
        out[:, i, :cols.size] = x[:, cols]
    return torch.from_numpy(out)


class GCNDecoder(nn.Module):
    """Two ChebConv layers (K 4 then 3, `width` channels) with BatchNorm + ReLU between,
    global mean pooling over the nodes, Conv1D and two residual blocks (Conv1D kernel 3 +
    LeakyReLU), Conv1D down to one channel, then two fully connected layers (1024 hidden)."""

    def __init__(self, length: int, out: int, edge_index: torch.Tensor, edge_weight: torch.Tensor,
                 n_nodes: int, width: int = 512, channels: int = 8):
        from torch_geometric.nn import ChebConv

        super().__init__()
        self.n_nodes = n_nodes
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)
        self.cheb1 = ChebConv(length, width, K=4)
        self.norm = nn.BatchNorm1d(width)
        self.cheb2 = ChebConv(width, width, K=3)
        self.conv_in = nn.Conv1d(1, channels, 1)
        self.res = nn.ModuleList([nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2))
                                  for _ in range(2)])
        self.conv_out = nn.Conv1d(channels, 1, 1)
        self.fc = nn.Sequential(nn.Linear(width, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, out))

    def forward(self, x):  # x: (n, nodes, length)
        from torch_geometric.nn import global_mean_pool

        n = len(x)
        offsets = (torch.arange(n, device=x.device) * self.n_nodes).repeat_interleave(self.edge_index.shape[1])
        edges = self.edge_index.repeat(1, n) + offsets
        weights = self.edge_weight.repeat(n)
        batch = torch.arange(n, device=x.device).repeat_interleave(self.n_nodes)
        h = self.cheb1(x.reshape(n * self.n_nodes, -1), edges, weights)
        h = torch.relu(self.norm(h))
        h = self.cheb2(h, edges, weights)
        h = global_mean_pool(h, batch)[:, None]  # (n, 1, width)
        h = self.conv_in(h)
        for block in self.res:
            h = h + block(h)
        return self.fc(self.conv_out(h).flatten(1))


# --------------------------------------------------------------------------- its Table 4's LPIPS stand-in
def perceptual_distance(gt, rec, networks, metric: str = "AlexNet(2)", batch: int = 32) -> float:
    """LPIPS without its learned layer weights: the `metric` network's feature maps, unit-
    normalised over channels at each location, squared difference summed over channels and
    averaged over locations; mean over images (0 = identical; CS292F's Table 4 uses LPIPS
    on AlexNet)."""
    from ..metrics import INPUT_SIZE, _features, to_tensor

    gt, rec = to_tensor(gt), to_tensor(rec)
    fn = networks.features[metric]
    size = networks.input_size.get(metric, INPUT_SIZE[metric])
    a, b = _features(fn, gt, size, batch), _features(fn, rec, size, batch)
    if a.ndim == 2:
        a, b = a[:, :, None, None], b[:, :, None, None]
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-10)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-10)
    return float((a - b).pow(2).sum(1).flatten(1).mean(1).mean())


# --------------------------------------------------------------------------- fitting
def _fit(cfg, model, x_train, y_train, x_test, fit, seed, loss=None, desc=""):
    scale = Standardizer(y_train)
    kwargs = {"loss_fn": loss} if loss else {}
    model, record = fit_decoder(model, x_train, scale(y_train), fit, seed, cfg.methods.val_share, desc=desc, **kwargs)
    return scale.inverse(predict(model, x_test)), record


def decode_text(cfg: Settings, data: SubjectData, seed: int = 0):
    """Text CNN on higher visual voxels -> the first `text_tokens` caption-state tokens; the
    remaining tokens are their training mean. -> (c_hat (n, L_T, d_T), fit record)."""
    p = cfg.methods.cs292f
    cols = data.higher_columns() if data.info is not None else np.arange(data.x_train.shape[1])
    k = min(p.text_tokens, data.c_train.shape[1])
    torch.manual_seed(seed)
    model = text_cnn(cols.size, k * data.c_train.shape[2], p.channels)
    head, record = _fit(cfg, model, torch.from_numpy(data.x_train[:, cols]), data.c_train[:, :k],
                        torch.from_numpy(data.x_test[:, cols]), p.text_cnn, seed, desc="text cnn")
    tail = data.c_train[:, k:].mean(0, keepdim=True).expand(len(head), -1, -1)
    return torch.cat([head, tail], 1), record


def decode_latent(cfg: Settings, data: SubjectData, kind: str, seed: int = 0):
    """One of the three latent decoders on early visual voxels -> (z_hat, fit record)."""
    p = cfg.methods.cs292f
    out = int(np.prod(data.z_train.shape[1:]))
    torch.manual_seed(seed)
    if kind == "gcn":
        nodes = [data.roi_columns(rois) for rois in NODES]
        nodes = [c for c in nodes if c.size]
        length = max(c.size for c in nodes)
        edge_index, edge_weight, r = roi_graph(data.x_train, nodes, p.edge_threshold)
        model = GCNDecoder(length, out, edge_index, edge_weight, len(nodes), p.width)
        z, record = _fit(cfg, model, node_features(data.x_train, nodes, length), data.z_train,
                         node_features(data.x_test, nodes, length), p.image_gcn, seed, desc="gcn")
        record["connectivity"] = r.round(3).tolist()
        record["edges"] = edge_index.T.tolist()
        return z, record
    cols = data.roi_columns(EARLY_VISUAL) if data.info is not None else np.arange(data.x_train.shape[1])
    x_train, x_test = torch.from_numpy(data.x_train[:, cols]), torch.from_numpy(data.x_test[:, cols])
    if kind == "cnn":
        return _fit(cfg, image_cnn(cols.size, out, p.channels), x_train, data.z_train, x_test, p.image_cnn, seed,
                    desc="cnn")
    if kind == "vae":
        return _fit(cfg, VAEDecoder(cols.size, out, p.vae_latent), x_train, data.z_train, x_test, p.image_vae, seed,
                    loss=vae_loss(p.vae_fmri_weight, p.vae_kl_weight), desc="vae")
    raise ValueError(f"unknown CS292F latent decoder {kind!r}; one of {LATENT_DECODERS}")


def fit_decode(cfg: Settings, data: SubjectData, seed: int = 0, kinds=LATENT_DECODERS) -> Decoded:
    """All latent decoders (the GCN only where ROI labels exist), the best by validation MSE
    drives img2img with the text CNN's c. `extra`: every decoder's z and fit record."""
    if data.info is None and "gcn" in kinds:
        print(f"subject {data.subject}: no ROI labels (voxel_info.csv / the file's `roi` key): the GCN decoder "
              "is skipped; the CNN and VAE decoders read every voxel.")
        kinds = [k for k in kinds if k != "gcn"]
    latents = {k: decode_latent(cfg, data, k, seed) for k in kinds}
    best = min(latents, key=lambda k: latents[k][1]["best_val_mse"])
    c, text_record = decode_text(cfg, data, seed) if data.text else (None, {})
    return Decoded(z=latents[best][0], c=c, extra={"best": best, "latents": latents, "text": text_record})
