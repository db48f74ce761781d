"""Table 2's rows as params overrides (the training itself runs in the notebook smoke test)."""
from __future__ import annotations

import dataclasses

import pytest

from neuropictor.ablations import ROW_KEYS, TABLE2, row_settings, select_rows
from neuropictor.config import ParamsError, load_params


def test_every_row_is_a_valid_params_variant_that_changes_what_it_names():
    base = dataclasses.asdict(load_params().neuropictor)
    assert len(TABLE2) == 9 and len(set(ROW_KEYS)) == 9
    for row in TABLE2:
        cfg = row_settings("params.yaml", {}, None, row)
        changed = {k for k, v in dataclasses.asdict(cfg.neuropictor).items() if v != base[k]}
        assert changed == {k.split(".", 1)[1] for k in row.overrides}, row.key
        assert cfg.neuropictor.multi_subject_pretraining == row.multi, row.key
    assert row_settings("params.yaml", {}, None, TABLE2[-1]).neuropictor == load_params().neuropictor


def test_select_rows_keeps_table_order_and_names_unknown_rows():
    assert [r.key for r in select_rows(["neuropictor", "cls"])] == ["cls", "neuropictor"]
    with pytest.raises(ParamsError, match="ablations.rows.*no_such_row"):
        select_rows(["no_such_row"])


def test_ablation_subject_must_be_prepared():
    with pytest.raises(ParamsError, match="ablations.subject 9"):
        load_params(overrides={"ablations.subject": 9})
