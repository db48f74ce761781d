"""The `compute:` section of params.yaml, applied: which device, which precision, how batches
are split and streamed. Every training loop (`train.fit`, `methods.base.fit_decoder`) builds its
`accelerate.Accelerator` from it; every sampling loop (`sample.denoise`) runs under its
autocast on the device its models were placed on (`place`).

    configure(cfg.compute)            # notebook_setup does this for every notebook
    found.pipe = place(found.pipe)    # models onto the configured device
    TrainConfig(steps=..., **train_settings(cfg.compute))

`device: auto` takes a GPU where there is one and the CPU otherwise; `cuda` without a GPU
stops with an error naming the key. Precision fp32 changes nothing; bf16 / fp16 run the
forward passes under autocast (weights stay fp32: accelerate's mixed precision).
"""
from __future__ import annotations

import contextlib

import torch

from .config import Compute, ParamsError

_ACTIVE = Compute()
_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def configure(compute: Compute) -> Compute:
    """Make `compute` the process's settings (what `place`, `autocast` and the loops use)."""
    global _ACTIVE
    device_of(compute)  # fail now, not an hour into a run
    _ACTIVE = compute
    return compute


def active() -> Compute:
    return _ACTIVE


def device_of(compute: Compute | None = None) -> torch.device:
    c = compute or _ACTIVE
    if c.device == "cpu" or (c.device == "auto" and not torch.cuda.is_available()):
        if c.precision == "fp16":
            raise ParamsError("params.compute.precision is fp16 but no GPU is in use; fp16 autocast needs CUDA. "
                              "Use fp32 or bf16 on CPU.")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ParamsError("params.compute.device is 'cuda' but torch sees no GPU on this machine. Set "
                          "compute.device to auto (falls back to the CPU) or cpu.")
    return torch.device("cuda")


def mixed_precision(compute: Compute | None = None) -> str:
    """accelerate's name for the precision: no | bf16 | fp16."""
    return _MIXED[(compute or _ACTIVE).precision]


def accelerator(compute: Compute | None = None, **kwargs):
    """An `accelerate.Accelerator` on the configured device and precision."""
    from accelerate import Accelerator

    c = compute or _ACTIVE
    return Accelerator(cpu=device_of(c).type == "cpu", mixed_precision=mixed_precision(c), **kwargs)


def autocast(compute: Compute | None = None):
    """The sampling loops' precision: a no-op at fp32, torch.autocast otherwise."""
    c = compute or _ACTIVE
    if c.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_of(c).type, dtype=_DTYPES[c.precision])


def place(model, compute: Compute | None = None):
    """A module or a diffusers pipeline moved to the configured device (returned)."""
    return model.to(device_of(compute))


def train_settings(compute: Compute | None = None) -> dict:
    """The `train.TrainConfig` fields that come from `compute:`."""
    c = compute or _ACTIVE
    return {"device": c.device, "mixed_precision": mixed_precision(c), "grad_accumulation": c.grad_accumulation,
            "workers": c.workers}  # processes: `decoding.train_neuropictor` launches them
