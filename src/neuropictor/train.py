"""One training loop for every trainable stage, on `accelerate`.

    history = fit(model, loss_fn, dataset, TrainConfig(steps=500, batch_size=16), out_dir)

- **Stateless, step-indexed batches**: the rows of global batch `s` are drawn from a generator
  seeded with (seed, s), so a resumed run sees exactly the batches it would have seen, and N
  processes split the same global batch (process k takes rows k, k+N, ...): 1 process and N
  processes follow the same trajectory.
- **Checkpoints** are safetensors (model, optimizer and scheduler tensors, EMA) plus a JSON of
  everything else; nothing is unpickled. `out_dir/checkpoint/` is replaced atomically every
  `ckpt_every` steps; a killed run started again resumes from it, to the same weights (the
  loss's random draws are seeded by step), and refuses a checkpoint written with other
  settings, naming them. Stages keep `out_dir` outside their DVC outputs (DVC deletes those
  before a stage runs): `paths.checkpoints/<stage>-<hash of its settings>/`.
- **Streamed batches**: a `torch.utils.data.DataLoader` (`cfg.workers` processes) fetches each
  step's rows from the dataset (e.g. on-disk features, `features.StreamedPairs`), so nothing
  needs the whole training set in memory.
- **Gradient accumulation** (`cfg.grad_accumulation`, through accelerate): a process's rows of
  the global batch are split into that many micro-batches, and each micro-batch takes the
  random draws its rows would have had in one pass, so accumulating k micro-batches follows
  the trajectory of one process (as N processes do).
- Runs under `accelerate launch` (DDP, mixed precision) unchanged; on CPU it is plain PyTorch.
  `cfg.device` / `cfg.mixed_precision` come from params' `compute:` (`compute.train_settings`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .io import atomic_dir


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16  # global batch (split across processes)
    lr: float = 1e-3
    # parameter-name prefix -> lr multiplier (e.g. {"hlgn.": 10}: a new head learns faster than the
    # pretrained trunk); every other parameter at `lr`
    lr_scales: dict = dataclasses.field(default_factory=dict)
    weight_decay: float = 0.0
    warmup: int = 50  # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 200
    log_every: int = 50
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (params compute.precision)
    device: str = "auto"  # auto | cpu | cuda (params compute.device)
    grad_accumulation: int = 1  # micro-batches per optimizer step (same global batch)
    workers: int = 0  # DataLoader worker processes
    ema: float = 0.0  # > 0: keep an exponential moving average of the weights (diffusers'
    #                   EMAModel, with its 1 - (1 + s) / (10 + s) warm-up); the model ends with it
    eval_every: int = 0  # > 0: call `evaluate(model)` this often (on the EMA weights) into history


class TensorBatches:
    """Row-indexable tensors: `ds[rows]` -> tuple of `t[rows]` (what `fit` expects)."""

    def __init__(self, *tensors: torch.Tensor):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same number of rows")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, rows):
        return tuple(t[rows] for t in self.tensors)


_DEFAULTS = dataclasses.asdict(TrainConfig())  # what a checkpoint written before a field existed ran with


class _StepRows(torch.utils.data.Sampler):
    """The row indices `fit` feeds, step by step from `start`: global batch `step`'s rows
    (`batch_indices`), this process's share (every `processes`-th from `rank`), cut into
    `micro` micro-batches (every `micro`-th of those)."""

    def __init__(self, n: int, start: int, cfg: "TrainConfig", rank: int, processes: int):
        self.n, self.start, self.cfg, self.rank, self.processes = n, start, cfg, rank, processes

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.grad_accumulation

    def __iter__(self):
        micro, stride = self.cfg.grad_accumulation, self.processes * self.cfg.grad_accumulation
        for step in range(self.start, self.cfg.steps):
            rows = batch_indices(self.n, step, self.cfg.batch_size, self.cfg.seed)
            for m in range(micro):
                yield rows[self.rank + self.processes * m::stride]


class _Rows(torch.utils.data.Dataset):
    """`dataset[rows]` as a map-style dataset whose items are whole micro-batches."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, rows):
        return self.dataset[rows]


def _as_is(batch):
    return batch


def checkpoint_dir(root: str | Path, name: str, *settings) -> Path:
    """`root/<name>-<hash of settings>`: where a stage keeps its training state, outside its
    DVC outputs. Everything that shapes the run goes into `settings` (dataclasses, dicts,
    numbers), so changed settings start a new folder instead of resuming an old run."""
    import hashlib

    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x

    key = json.dumps([plain(x) for x in settings], sort_keys=True, default=str)
    return Path(root) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


_STEP_DRAWS: tuple[int, int, int] | None = None  # (seed of the step's draws, process, processes) inside `fit`


class BatchDraws:
    """Random draws for the samples of one training batch that do not depend on how the
    batch is split over processes: inside `fit`, every process draws the whole global batch
    from one generator seeded by (seed, step) and keeps its own rows (the rows `fit` gave it:
    every `processes`-th from its index on), so under DDP a sample gets the noise, timestep
    and caption drop it gets in one process and the runs end with the same weights. Outside
    `fit` the draws come from the global RNG."""

    def __init__(self, n: int, device):
        self.n, self.device = n, torch.device(device)
        self.generator, self.rank, self.processes = None, 0, 1
        if _STEP_DRAWS is not None:
            seed, self.rank, self.processes = _STEP_DRAWS
            self.generator = torch.Generator(self.device).manual_seed(seed)

    def _mine(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.rank::self.processes]

    def rand(self) -> torch.Tensor:
        return self._mine(torch.rand(self.n * self.processes, device=self.device, generator=self.generator))

    def randn(self, *shape: int) -> torch.Tensor:
        return self._mine(torch.randn(self.n * self.processes, *shape, device=self.device, generator=self.generator))

    def randint(self, high: int) -> torch.Tensor:
        return self._mine(torch.randint(0, high, (self.n * self.processes,), device=self.device,
                                        generator=self.generator))


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """Rows of global batch `step`: a seeded draw without replacement within the batch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if batch_size <= n:
        return torch.randperm(n, generator=g)[:batch_size]
    return torch.randint(0, n, (batch_size,), generator=g)


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / max(cfg.warmup, 1)
        progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


# ---------------------------------------------------------------- checkpoint (no pickle)
def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value.contiguous()
                meta["state"][str(pid)][name] = "tensor"
            else:
                meta["state"][str(pid)][name] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, slots in meta["state"].items():
        state[int(pid)] = {name: tensors[f"opt.{pid}.{name}"] if kind == "tensor" else kind
                           for name, kind in slots.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def resumable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a resume needs of a model: its trained parameters and its buffers, not the frozen
    weights it was built with (NeuroPictor's checkpoint leaves SD-2.1's 866 M-parameter UNet out)."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in model.state_dict().items() if k in keep}


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, step: int,
                    history: list, cfg: TrainConfig, ema=None) -> None:
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in resumable_state(model).items()}, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        ema_step = None
        if ema is not None:
            save_file({f"ema.{i}": p.contiguous() for i, p in enumerate(ema.shadow_params)}, str(tmp / "ema.safetensors"))
            ema_step = ema.optimization_step
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "ema_step": ema_step,
            "history": history, "config": dataclasses.asdict(cfg)}))


def _check_resumable(path: Path, state: dict, cfg: TrainConfig) -> None:
    """A checkpoint resumes only the run that wrote it: same steps, batch, lr, seed, ..."""
    recorded = state.get("config", {})
    wanted = dataclasses.asdict(cfg)
    free = ("ckpt_every", "log_every", "workers", "device")  # do not change the trajectory
    differ = [k for k in wanted if k not in free and recorded.get(k, _DEFAULTS.get(k)) != wanted[k]]
    if differ:
        detail = ", ".join(f"{k}: {recorded.get(k)!r} there, {wanted[k]!r} now" for k in differ)
        raise ValueError(f"The checkpoint {path} was written with other settings ({detail}). Resuming it would "
                         f"mix two runs; delete {path} to start this run from scratch, or restore those settings.")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, cfg: TrainConfig | None = None,
                    ema=None) -> tuple[int, list]:
    try:
        state = json.loads((path / "state.json").read_text())
        if cfg is not None:
            _check_resumable(path, state, cfg)
        saved = load_file(str(path / "model.safetensors"))
        _, unexpected = model.load_state_dict(saved, strict=False)
        lacking = sorted(set(resumable_state(model)) - set(saved))
        if unexpected or lacking:
            raise KeyError(f"weights that do not fit: unexpected {unexpected[:3]}, missing {lacking[:3]}")
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                       state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            shadow = load_file(str(path / "ema.safetensors"))
            ema.shadow_params = [shadow[f"ema.{i}"] for i in range(len(ema.shadow_params))]
            ema.optimization_step = state["ema_step"]
    except (OSError, KeyError, RuntimeError, json.JSONDecodeError, TypeError, SafetensorError) as err:
        raise ValueError(f"The checkpoint {path} cannot be resumed ({type(err).__name__}: {err}). It is damaged or "
                         f"was written by another model; delete {path} to start this run from scratch.") from err
    return state["step"], state["history"]


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: the trainable parameters at `cfg.lr`, those whose
    name starts with a prefix of `cfg.lr_scales` at `cfg.lr` times its multiplier (the
    scheduler scales every group alike). A prefix that names no trainable parameter is an
    error (a typo would silently train at the base lr)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups, taken = [], set()
    for prefix, scale in cfg.lr_scales.items():
        chosen = [p for n, p in named if n.startswith(prefix) and n not in taken]
        if not chosen:
            raise ValueError(f"TrainConfig.lr_scales names {prefix!r}, but no trainable parameter's name starts "
                             f"with it (they start with {sorted({n.split('.')[0] for n, _ in named})}).")
        taken.update(n for n, _ in named if n.startswith(prefix))
        groups.append({"params": chosen, "lr": cfg.lr * float(scale)})
    rest = [p for n, p in named if n not in taken]
    return ([{"params": rest}] if rest else []) + groups


# ---------------------------------------------------------------- the loop
def fit(model: torch.nn.Module, loss_fn: Callable, dataset, cfg: TrainConfig,
        out_dir: str | Path | None = None, desc: str = "train",
        stop_after: int | None = None, evaluate: Callable | None = None) -> list[dict]:
    """Train `model` by minimising `loss_fn(model, batch)`; returns the loss history.

    `dataset[idx]` must accept a LongTensor of row indices and return a batch (tensor or
    tuple of tensors); `loss_fn` returns a scalar mean over the batch's rows (so shards
    average to the global batch's loss), or (that scalar, {name: scalar term}) to log the
    terms of a composite loss (e.g. L_dif and L_sem) next to it in the history.
    `stop_after` ends early after that many steps of this call, as a kill would (used by the
    resume test). `evaluate(model) -> dict` is called
    every `cfg.eval_every` steps and at the end (with the EMA weights when `cfg.ema` is on);
    its numbers join the history (a learning curve). Each logged entry carries "seconds":
    the run's wall time so far, summed over every resumed part.
    """
    global _STEP_DRAWS
    from accelerate import Accelerator

    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"TrainConfig.device is {cfg.device!r}; use auto, cpu or cuda.")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device is 'cuda' (params compute.device) but torch sees no GPU; use auto or cpu.")
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=on_cpu,
                              gradient_accumulation_steps=cfg.grad_accumulation)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema)
    start, history = 0, []
    ckpt = Path(out_dir) / "checkpoint" if out_dir is not None else None
    if ckpt is not None and (ckpt / "state.json").exists():
        start, history = load_checkpoint(ckpt, model, optimizer, scheduler, cfg, ema)
        accelerator.print(f"{desc}: resuming from step {start} ({ckpt})")
    # wall time spent on this run so far, carried across resumes (the history's "seconds")
    seconds_before = max((h.get("seconds", 0.0) for h in history), default=0.0)
    t_start = time.perf_counter()

    def run_evaluation(done: int) -> None:
        if evaluate is None:
            return
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        model.eval()
        with torch.no_grad():
            numbers = evaluate(accelerator.unwrap_model(model))
        model.train()
        if ema is not None:
            ema.restore(params)
        history.append({"step": done, **numbers})
        accelerator.print(f"{desc} step {done}: " + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()))

    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:  # its shadow weights follow the model onto the accelerator's device
        ema.to(accelerator.device)
    n_proc, rank, micro = accelerator.num_processes, accelerator.process_index, cfg.grad_accumulation
    if cfg.batch_size % (n_proc * micro):
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the {n_proc} processes x {micro} "
                         f"accumulated micro-batches")
    n = len(dataset)
    loader = iter(torch.utils.data.DataLoader(_Rows(dataset), batch_size=None, collate_fn=_as_is,
                                              sampler=_StepRows(n, start, cfg, rank, n_proc),
                                              num_workers=cfg.workers))
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not accelerator.is_main_process,
               initial=start, total=cfg.steps)
    running, running_terms = [], {}
    for step in bar:
        done = step + 1
        # the loss's own draws (noise, timesteps, dropped captions) are a function of (seed,
        # step, process, micro-batch) too, so a resumed run continues exactly as the
        # uninterrupted one, and micro-batches draw what their rows draw in one pass
        step_seed = (cfg.seed * 1_000_003 + step) * 64
        step_loss, step_terms = 0.0, {}
        for m in range(micro):
            part = rank + n_proc * m  # this micro-batch's place among the global batch's n_proc x micro shares
            torch.manual_seed(step_seed + part)
            _STEP_DRAWS = (step_seed, part, n_proc * micro)  # for BatchDraws: the same in every process
            batch = next(loader)
            batch = tuple(b.to(accelerator.device) for b in batch) if isinstance(batch, tuple) else batch.to(accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = loss_fn(model, batch)
                loss, terms = loss if isinstance(loss, tuple) else (loss, {})
                accelerator.backward(loss)  # divided by `micro` there
                if accelerator.sync_gradients:
                    if cfg.grad_clip:
                        accelerator.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()  # a no-op until the last micro-batch
                if accelerator.sync_gradients:
                    scheduler.step()
                    if ema is not None:
                        ema.step(params)
                optimizer.zero_grad(set_to_none=True)
            step_loss += float(accelerator.reduce(loss.detach(), reduction="mean")) / micro
            for key, value in terms.items():
                step_terms[key] = step_terms.get(key, 0.0) + float(accelerator.reduce(value.detach(), reduction="mean")) / micro
        running.append(step_loss)
        for key, value in step_terms.items():
            running_terms.setdefault(key, []).append(value)
        if done % cfg.log_every == 0 or done == cfg.steps:
            history.append({"step": done, "loss": sum(running) / len(running),
                            **{k: sum(v) / len(v) for k, v in running_terms.items()},
                            "seconds": round(seconds_before + time.perf_counter() - t_start, 2)})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            running, running_terms = [], {}
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            run_evaluation(done)
        if ckpt is not None and accelerator.is_main_process and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            save_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler, done, history, cfg, ema)
        if stop_after is not None and done - start >= stop_after:
            break
    _STEP_DRAWS = None
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(params)
    model.eval()
    return history
