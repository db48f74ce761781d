"""What the probes in this folder share: the trained world one subject's test scans are read from."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from neuropictor.config import Settings
from neuropictor.data.prep import Prepared
from neuropictor.evaluation import held_out
from neuropictor.models.foundation import load_world_foundation


class ProbeWorld(NamedTuple):
    prepared: Prepared
    found: object  # the world's foundation (`load_world_foundation`)
    networks: object  # its metric networks
    mask: np.ndarray  # the flatmap mask
    ids: np.ndarray  # the subject's shared test images
    maps: np.ndarray  # their flatmaps
    gt: object  # the stimuli (n, 3, H, W)


def probe_world(cfg: Settings, subject: int) -> ProbeWorld:
    """Prepared data, foundation, metric networks, flatmap mask and `subject`'s test split,
    as `make repro` left them."""
    prepared, found = Prepared(cfg.path("prepared")), load_world_foundation(cfg)
    ids, maps, gt = held_out(prepared, subject)
    return ProbeWorld(prepared, found, found.metric_networks(), np.load(cfg.path("prepared") / "flatmap_mask.npy"),
                      ids, maps, gt)
