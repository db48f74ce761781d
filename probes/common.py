"""What the probes in this folder share: the trained world they read, and NeuroPictor's two
training stages run as the pipeline runs them (without its checkpoints or saved models)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from neuropictor import decoding
from neuropictor.config import Settings
from neuropictor.data.prep import Prepared
from neuropictor.evaluation import held_out
from neuropictor.models.foundation import load_world_foundation


# the scores the probes report: Table 1's eight metrics and the synthetic world's attributes
KEEP = ("PixCorr", "SSIM", "AlexNet(2)†", "AlexNet(5)†", "Inception†", "CLIP†", "EffNet-B†", "SwAV†",
        "shape accuracy", "colour accuracy", "position error")


class World(NamedTuple):
    prepared: Prepared
    found: object  # the world's foundation (`load_world_foundation`)
    networks: object  # its metric networks
    mask: np.ndarray  # the flatmap mask


class ProbeWorld(NamedTuple):
    prepared: Prepared
    found: object
    networks: object
    mask: np.ndarray
    ids: np.ndarray  # one subject's shared test images
    maps: np.ndarray  # their flatmaps
    gt: object  # the stimuli (n, 3, H, W)


def load_world(cfg: Settings) -> World:
    """Prepared data, foundation, metric networks and flatmap mask, as `make repro` left them."""
    prepared, found = Prepared(cfg.path("prepared")), load_world_foundation(cfg)
    return World(prepared, found, found.metric_networks(), np.load(cfg.path("prepared") / "flatmap_mask.npy"))


def probe_world(cfg: Settings, subject: int) -> ProbeWorld:
    """`load_world` and `subject`'s test split."""
    world = load_world(cfg)
    return ProbeWorld(*world, *held_out(world.prepared, subject))


def with_lr_scales(extra: dict[str, float]) -> Callable:
    """`decoding.lr_scales` with `extra` (parameter-name prefix -> lr multiplier) put first, for
    a probe's own runs: assign the result to `decoding.lr_scales` and restore it after."""
    base = decoding.lr_scales

    def scales(model, loop):
        return {**extra, **{k: v for k, v in base(model, loop).items() if k not in extra}}
    return scales


def pretrain(cfg: Settings, world, wrap: Callable = lambda m: m, desc: str = "pretrain",
             rows: Callable = lambda data: data):
    """Multi-subject pretraining as stage 04 runs it; `wrap` may change the fresh model first,
    `rows` the training set (`decoding_data`'s, e.g. restricted to some images)."""
    model = wrap(decoding.build_neuropictor(cfg, world.found, world.mask, "pretrain"))
    data = rows(decoding.decoding_data(cfg, world.prepared, list(cfg.prep.subjects), "train"))
    decoding.train_neuropictor(model.train(), data, cfg.neuropictor.pretrain, cfg.seed, None, desc=desc)
    return model.eval()


def refine(cfg: Settings, world, pretrained, subject: int, wrap: Callable = lambda m: m, desc: str = "refine",
           rows: Callable = lambda data: data):
    """Refining on `subject` from `pretrained` (its auxiliary encoder, absent there, starts at 0);
    `rows` as in `pretrain`."""
    model = wrap(decoding.build_neuropictor(cfg, world.found, world.mask, "refine"))
    model.load_trainable(pretrained.trainable_state_dict(), strict=False)
    data = rows(decoding.decoding_data(cfg, world.prepared, [subject], "train"))
    decoding.train_neuropictor(model.train(), data, cfg.neuropictor.refine, cfg.seed, None, desc=desc)
    return model.eval()
