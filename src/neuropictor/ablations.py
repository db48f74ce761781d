"""Table 2 of the paper (ablations on one subject): each row is a set of `params.yaml`
overrides of the `neuropictor:` switches, trained as the pipeline trains (multi-subject
pretraining, then refining on the subject) and scored like Table 1.

    for row in TABLE2:
        model = train_row(row, cfg, found, prepared, mask, subject, out_root)

Models the main pipeline already trained are reused, never retrained: a row whose
pretraining switches equal the params' loads `models/pretrain`, and a row equal to the
params in every switch loads `models/refine_subj<subject>`. Rows that share a pretraining
(e.g. "w/o Au. Enc." and the full model) train it once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import ParamsError, Settings, load_params, notebook_overrides
from .decoding import (build_neuropictor, decoding_data, load_model, save_model, stage_checkpoint, switches,
                       train_neuropictor, training_inputs)


@dataclass(frozen=True)
class Row:
    key: str  # folder name of the row's models
    model: str  # Table 2's "Model" column
    encoder: str  # "fMRI Enc." column: random init | [CLS] | frozen | full
    multi: bool  # "Multi Pret." column
    overrides: dict = field(default_factory=dict)  # dotted params keys -> values


_SOLO = {"neuropictor.multi_subject_pretraining": False}
TABLE2: tuple[Row, ...] = (
    Row("random_init", "NeuroPictor", "random init", False, {**_SOLO, "neuropictor.encoder_init": "random"}),
    Row("cls", "NeuroPictor", "[CLS]", False, {**_SOLO, "neuropictor.encoder_output": "cls"}),
    Row("frozen", "NeuroPictor", "frozen", False, {**_SOLO, "neuropictor.encoder_trainable": False}),
    Row("full", "NeuroPictor", "full", False, dict(_SOLO)),
    Row("wo_finetune", "W/o Finetune", "full", True, {"neuropictor.refining": False}),
    Row("wo_llmn", "W/o LLMN", "full", True, {"neuropictor.use_llmn": False}),
    Row("wo_aux", "W/o Au. Enc.", "full", True, {"neuropictor.use_aux": False}),
    Row("wo_lsem", "W/o L_sem", "full", True, {"neuropictor.lambda_sem": 0.0}),
    Row("neuropictor", "NeuroPictor", "full", True, {}),
)
ROW_KEYS = tuple(r.key for r in TABLE2)


def select_rows(keys) -> list[Row]:
    """The rows named in `ablations.rows`, in Table 2's order; an unknown key is an error."""
    unknown = [k for k in keys if k not in ROW_KEYS]
    if unknown:
        raise ParamsError(f"params.ablations.rows has unknown row(s) {unknown}; known: {list(ROW_KEYS)}")
    return [r for r in TABLE2 if r.key in set(keys)]


def row_settings(params_file: str | Path, overrides: dict, smoke: bool | None, row: Row) -> Settings:
    """The settings a row trains under: the params file, the notebook's parameters
    (`overrides`, `smoke`), then the row's overrides."""
    return load_params(params_file, {**notebook_overrides(overrides, smoke), **row.overrides})


# The switches each training stage reads (as the DVC stages' params list them). Pretraining's
# L_sem is read from the switches it trains under (`decoding.switches`): off there unless
# `sem_in_pretraining`, so then lambda_sem shapes only refining
_PRETRAIN_KEYS = ("encoder_init", "encoder_output", "encoder_trainable", "use_llmn", "empty_rate",
                  "multi_subject_pretraining", "llmn_input", "lambda_low", "pretrain")
_REFINE_KEYS = _PRETRAIN_KEYS + ("lambda_sem", "sem_loss", "sem_in_pretraining", "use_aux", "refining", "refine")


def _switches(cfg: Settings, keys) -> tuple:
    n = asdict(cfg.neuropictor)
    pretrain = switches(cfg, "pretrain")
    return tuple(repr(n[k]) for k in keys) + (pretrain.lambda_sem, pretrain.sem_loss if pretrain.lambda_sem else None)


def train_row(row: Row, cfg: Settings, base: Settings, found, prepared, mask: np.ndarray, subject: int,
              out_root: Path, pretrained: dict | None = None, progress: str = ""):
    """Train (or load) one Table 2 row's model for `subject`; returns it in eval mode.

    cfg: the row's settings (`row_settings`); base: the pipeline's settings, whose trained
    models under `paths.models` are reused where the switches match; pretrained: a dict
    shared across calls, pretraining switches -> folder, so rows share a pretraining."""
    pretrained = {} if pretrained is None else pretrained
    n = cfg.neuropictor
    # 1. the multi-subject start point
    pre_key = _switches(cfg, _PRETRAIN_KEYS)
    pre_model = build_neuropictor(cfg, found, mask, "pretrain")
    if pre_key == _switches(base, _PRETRAIN_KEYS):
        load_model(base.path("models") / "pretrain", pre_model)
    elif pre_key in pretrained:
        load_model(pretrained[pre_key], pre_model)
    elif n.multi_subject_pretraining:
        data = decoding_data(cfg, prepared, list(cfg.prep.subjects), "train")
        out = out_root / f"{row.key}_pretrain"
        train_neuropictor(pre_model.train(), data, n.pretrain, cfg.seed,
                          stage_checkpoint(cfg, f"ablation_{row.key}_pretrain", *training_inputs(base)),
                          desc=f"{progress}{row.key} pretrain",
                          smoke_steps=cfg.foundation.smoke_steps if cfg.smoke else None)
        save_model(out, pre_model, {"row": row.key, "stage": "pretrain", "subjects": list(cfg.prep.subjects)})
        pretrained[pre_key] = out
    else:  # no multi-subject pretraining: the untrained model (seeded) is the start point
        out = out_root / f"{row.key}_init"
        save_model(out, pre_model, {"row": row.key, "stage": "init"})
        pretrained[pre_key] = out
    if not n.refining:
        return pre_model.eval()
    # 2. refining on the subject
    model = build_neuropictor(cfg, found, mask, "refine")
    model.load_trainable(pre_model.trainable_state_dict(), strict=False)  # aux encoder: absent there, stays 0
    same_as_pipeline = (_switches(cfg, _REFINE_KEYS) == _switches(base, _REFINE_KEYS)
                        and subject in base.neuropictor.refine_subjects)
    if same_as_pipeline:
        return load_model(base.path("models") / f"refine_subj{subject}", model)
    data = decoding_data(cfg, prepared, [subject], "train")
    out = out_root / row.key
    train_neuropictor(model.train(), data, n.refine, cfg.seed,
                      stage_checkpoint(cfg, f"ablation_{row.key}_refine{subject}", *training_inputs(
                          base, pretrained[pre_key] if pre_key in pretrained else base.path("models") / "pretrain")),
                      desc=f"{progress}{row.key} refine",
                      smoke_steps=cfg.foundation.smoke_steps if cfg.smoke else None)
    save_model(out, model, {"row": row.key, "stage": "refine", "subjects": [subject]})
    return model.eval()
