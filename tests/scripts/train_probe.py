"""A tiny regression trained with neuropictor.train.fit; weights saved to argv[1].

Run directly (1 process) or under `accelerate launch --multi_gpu --num_processes 2` by the
tests (on a machine without GPUs that is two CPU processes over gloo; `--cpu` would quietly
run one)."""
import sys

import torch
from safetensors.torch import save_file

from neuropictor.train import TensorBatches, TrainConfig, fit


def make():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 3, generator=g) + 0.1 * torch.randn(256, 3, generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model, TensorBatches(x, y)


def loss_fn(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


if __name__ == "__main__":
    model, data = make()
    cfg = TrainConfig(steps=60, batch_size=16, lr=3e-2, warmup=5, ckpt_every=10, log_every=10)
    history = fit(model, loss_fn, data, cfg, out_dir=None)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:  # the process count goes along, so a test sees DDP really ran
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1],
                  metadata={"processes": str(state.num_processes)})
