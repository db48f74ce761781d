"""A training stage in miniature, run by `dvc repro` in test_train.py: the probe regression
through `train.fit`, its state under checkpoints/ (outside the stage's outs, as notebooks 03
and 04 keep theirs under paths.checkpoints), its weights written to out/ when complete."""
import time
from pathlib import Path

from safetensors.torch import save_file
from train_probe import loss_fn, make

from neuropictor.io import atomic_dir
from neuropictor.train import TrainConfig, fit


def slow_loss(model, batch):
    time.sleep(0.05)  # slow enough for the test to kill it between checkpoints
    return loss_fn(model, batch)


model, data = make()
cfg = TrainConfig(steps=60, batch_size=16, lr=3e-2, warmup=5, ckpt_every=10, log_every=10)
fit(model, slow_loss, data, cfg, Path("checkpoints") / "probe")
with atomic_dir(Path("out")) as tmp:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
