"""Run a jupytext `py:percent` notebook headlessly with papermill (one DVC stage = one call).

    python -m neuropictor.nb notebooks/01_data_prep.py [-p NAME VALUE ...]
    python -m neuropictor.nb notebooks/04_train.py --dvc-stage     # in dvc.yaml: from DVC_STAGE

The executed notebook is kept as <paths.reports>/<name>.ipynb (a record, never a dependency).
It is written under a temporary name and renamed only when every cell ran; a failed run is
kept as <name>.failed.ipynb so the traceback can be read in context.

No params value ever reaches a shell: the stage commands in dvc.yaml hold only literals, and
a `foreach` stage's item is read here from DVC's `DVC_STAGE` variable (e.g. `refine@7`) and
checked against params.yaml before it is used.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

from .config import PROJ_ROOT

KERNEL = "python3"


def run_notebook(source: str | Path, output: str | Path | None = None,
                 parameters: dict | None = None, log_output: bool = True) -> Path:
    """Convert `source` (.py) to a notebook, execute it, return the executed notebook's path."""
    import jupytext
    import papermill

    source = Path(source)
    if not source.is_absolute():
        source = PROJ_ROOT / source
    if not source.exists():
        raise FileNotFoundError(f"Notebook source {source} not found.")
    if not output:
        from .config import load_params

        params = parameters or {}
        reports = load_params(params.get("PARAMS_FILE"), params.get("OVERRIDES") or {}).path("reports")
        output = reports / f"{source.stem}.ipynb"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    failed = output.with_suffix(".failed.ipynb")
    failed.unlink(missing_ok=True)
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.cells = _cells_for_world(notebook.cells, parameters or {})
    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / f"{source.stem}.ipynb"
        jupytext.write(notebook, converted, fmt="ipynb")
        partial = output.with_suffix(".partial.ipynb")
        try:
            papermill.execute_notebook(
                str(converted), str(partial), parameters=parameters or {}, kernel_name=KERNEL,
                log_output=log_output, progress_bar=False, cwd=str(PROJ_ROOT),
            )
        except BaseException:
            if partial.exists():
                os.replace(partial, failed)
            raise
    os.replace(partial, output)
    return output


WORLD_TAGS = {"synthetic-only": lambda world: world == "synthetic",
              "paper-world-only": lambda world: world != "synthetic"}


def _cells_for_world(cells: list, parameters: dict) -> list:
    """Keep the cells of the world in force (params `world`, with the notebook's PARAMS_FILE
    and OVERRIDES): a stage whose work differs between worlds tags its cells."""
    tagged = [c for c in cells if set(c.get("metadata", {}).get("tags", [])) & set(WORLD_TAGS)]
    if not tagged:
        return cells
    from .config import load_params

    world = load_params(parameters.get("PARAMS_FILE"), parameters.get("OVERRIDES") or {}).world
    return [c for c in cells if all(WORLD_TAGS[t](world) for t in c.get("metadata", {}).get("tags", [])
                                    if t in WORLD_TAGS)]


def dvc_stage_parameters(source: Path, addressing: str | None, params_file: str | None = None) -> tuple[dict, str]:
    """DVC's stage address (`pretrain`, `refine@7`) -> the notebook's STAGE (and SUBJECT)
    parameters and the executed notebook's name (`04_pretrain`, `04_refine_subj7`). The
    item is checked against params.yaml (`neuropictor.refine_subjects`)."""
    from .config import ParamsError, load_params

    if not addressing:
        raise SystemExit("--dvc-stage reads the stage from DVC_STAGE, which `dvc repro` sets; outside DVC "
                         "pass the notebook's parameters instead (e.g. -p STAGE refine -p SUBJECT 1).")
    name = addressing.rsplit(":", 1)[-1]
    stage, _, item = name.partition("@")
    number = source.stem.split("_", 1)[0]
    if not item:
        return {"STAGE": stage}, f"{number}_{stage}"
    subjects = load_params(params_file).neuropictor.refine_subjects
    if not item.isdigit() or int(item) not in subjects:
        raise ParamsError(f"DVC stage {addressing!r}: {item!r} is not one of neuropictor.refine_subjects "
                          f"{list(subjects)} in params.yaml.")
    return {"STAGE": stage, "SUBJECT": int(item)}, f"{number}_{stage}_subj{int(item)}"


def _value(text: str):
    return yaml.safe_load(text)  # "true" -> True, "3" -> 3, "a/b" -> "a/b"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="notebooks/NN_name.py (jupytext py:percent)")
    parser.add_argument("-o", "--output", help="executed notebook (default reports/NN_name.ipynb)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a variable of the notebook's parameters cell (YAML value)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not echo cell output")
    parser.add_argument("--dvc-stage", action="store_true",
                        help="take STAGE / SUBJECT from DVC_STAGE (a foreach item never passes through a shell)")
    args = parser.parse_args(argv)
    params = {name: _value(value) for name, value in args.parameter}
    if args.dvc_stage:
        stage_params, name = dvc_stage_parameters(Path(args.source), os.environ.get("DVC_STAGE"),
                                                  params.get("PARAMS_FILE"))
        params.update(stage_params)
        if not args.output:
            from .config import load_params

            args.output = str(load_params(params.get("PARAMS_FILE"), params.get("OVERRIDES") or {})
                              .path("reports") / f"{name}.ipynb")
    if not args.quiet:  # papermill echoes cell output through the "papermill" logger
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = run_notebook(args.source, args.output, params, log_output=not args.quiet)
    except Exception as err:  # papermill's error already shows the failing cell
        print(f"\nnotebook {args.source} failed: {type(err).__name__}: {str(err)[-2000:]}", file=sys.stderr)
        return 1
    print(f"executed {args.source} -> {out.relative_to(PROJ_ROOT) if out.is_relative_to(PROJ_ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
