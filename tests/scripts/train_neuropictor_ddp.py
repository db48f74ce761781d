"""A tiny NeuroPictor (real fMRI encoder, diffusers UNet and ControlNet copy, HLGN, L_dif +
L_sem) trained with neuropictor.train.fit for a few steps; its trainable weights are saved
to argv[1].

Run directly (1 process) or under `accelerate launch --cpu --num_processes 2` by the tests:
the noise, timesteps and dropped captions of a sample are the same whatever the number of
processes, so both runs must end with the same weights."""
import sys

import torch
from safetensors.torch import save_file

from neuropictor.models.fmri_encoder import EncoderSpec, FlatmapMAE
from neuropictor.models.foundation import UNetSpec, build_unet, noise_schedule
from neuropictor.models.neuropictor import ModelSwitches, NeuroPictor, neuropictor_loss
from neuropictor.train import TensorBatches, TrainConfig, fit

L_T, D_T, SIDE, C = 6, 16, 8, 4


def make():
    g = torch.Generator().manual_seed(0)
    n = 32
    data = TensorBatches(torch.randn(n, 16, 16, generator=g), torch.randn(n, C, SIDE, SIDE, generator=g),
                         torch.randn(n, L_T, D_T, generator=g))
    torch.manual_seed(0)
    encoder = FlatmapMAE(EncoderSpec(image_size=16, patch=8, width=16, depth=1, heads=2, decoder_width=16,
                                     decoder_depth=1))
    unet = build_unet(UNetSpec(channels=(8, 16), heads=2), latent_side=SIDE, latent_channels=C, cross_dim=D_T)
    model = NeuroPictor(encoder, unet, torch.randn(1, L_T, D_T), noise_schedule("ddpm"),
                        ModelSwitches(lambda_sem=0.1, empty_rate=0.25))
    return model, data


if __name__ == "__main__":
    model, data = make()
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup=1, log_every=1)
    fit(model, neuropictor_loss, data, cfg, out_dir=None)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:  # the process count goes along, so a test sees DDP really ran
        save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, sys.argv[1],
                  metadata={"processes": str(state.num_processes)})
