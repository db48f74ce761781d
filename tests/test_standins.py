"""Stand-in metric networks and the attribute metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from neuropictor.data.stimuli import make_stimuli
from neuropictor.metrics import MetricNetworks, evaluate
from neuropictor.models.standins import (AttributeNet, attribute_loss, attribute_metrics,
                                         attribute_targets, predict_attributes)
from neuropictor.train import TensorBatches, TrainConfig, fit


def _truth(rows):
    return pd.DataFrame(rows)


def test_attribute_metrics_by_hand():
    truth = _truth([{"shape_0": "circle", "colour_0": "red", "size_0": "large", "x_0": 0.2, "y_0": 0.2},
                    {"shape_0": "ring", "colour_0": "blue", "size_0": "small", "x_0": 0.5, "y_0": 0.5}])
    pred = pd.DataFrame({"shape": ["circle", "cross"], "colour": ["red", "blue"], "size": ["small", "small"],
                         "x": [0.2, 0.8], "y": [0.5, 0.9]})
    m = attribute_metrics(pred, truth)
    assert m["shape accuracy"] == 0.5 and m["colour accuracy"] == 1.0 and m["size accuracy"] == 0.5
    assert abs(m["position error"] - (0.3 + 0.5) / 2) < 1e-12  # distances 0.3 and 0.5


def test_attribute_net_learns_and_plugs_into_the_suite():
    rng = np.random.default_rng(0)
    images, _, attrs = make_stimuli(1300, 64, rng)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = attribute_targets(attrs)
    torch.manual_seed(0)
    net = AttributeNet(width=16)
    train = slice(0, 1200)
    fit(net, attribute_loss, TensorBatches(x[train], y[train]),
        TrainConfig(steps=800, batch_size=32, lr=3e-3, warmup=20, log_every=100))
    pred = predict_attributes(net, x[1200:])
    m = attribute_metrics(pred, attrs.iloc[1200:].reset_index(drop=True))
    # measured 0.86 / 0.86 / 0.12 with this seed; chance is 0.17 / 0.2 / ~0.4
    assert m["colour accuracy"] > 0.7 and m["shape accuracy"] > 0.7
    assert m["position error"] < 0.2

    nets = MetricNetworks(features={"AlexNet(2)": net.features("early"), "Inception": net.features("pooled")},
                          stand_in=True, input_size={"AlexNet(2)": 64, "Inception": 64})
    same = evaluate(x[1200:1240], x[1200:1240], nets)
    assert same["AlexNet(2)†"] == 1.0 and same["Inception†"] == 1.0
    shuffled = evaluate(x[1200:1240], x[1240:1280], nets)
    assert shuffled["Inception†"] < 0.8
