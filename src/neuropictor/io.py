"""Atomic file writing and the project's error type for bad input.

Every output is written to a temporary sibling and renamed into place, so an interrupted
run never leaves a file (or folder) that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Input data is missing or malformed. The message names the file and the fix."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


OUTPUT_MARKER = ".neuropictor-output"  # in every folder atomic_dir writes: "this project made it"


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; it replaces `path` (whole) only on success.

    Only a folder this project wrote (it holds `OUTPUT_MARKER`) or an empty one is ever
    replaced: an output key pointed at a folder of the user's files (`paths.encoder: weights`)
    stops before any work, naming the folder, instead of deleting it."""
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text("written by neuropictor; replaced whole when its stage runs again\n")
        _check_replaceable(path)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _check_replaceable(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"{path} is a {'link' if path.is_symlink() else 'file'}, not an output folder of this "
                        "project; it is left as it is. Point the params key that names it at a new folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / OUTPUT_MARKER).exists():
        raise DataError(f"{path} holds files this project did not write (no {OUTPUT_MARKER} in it), so it is not "
                        "replaced. Point the params key that names it at a new or empty folder, or move the files "
                        "away yourself.")


class NpyRows:
    """An .npy file of a known shape filled a block of rows at a time: each write maps the
    file, copies the block and unmaps it, so the resident memory stays one block."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: str):
        self.path = Path(path)
        np.lib.format.open_memmap(self.path, mode="w+", dtype=np.dtype(dtype), shape=shape).flush()

    def write(self, start: int, values: np.ndarray) -> None:
        out = np.load(self.path, mmap_mode="r+")
        out[start:start + len(values)] = values
        out.flush()
        del out


def row_positions(ids: np.ndarray, wanted, where: str | Path, fix: str) -> np.ndarray:
    """Positions of `wanted` in the sorted id array `ids` (the rows of an array keyed by
    nsd_id); a clear error naming `where` and the `fix` for any id that is not there."""
    wanted = np.asarray(wanted)
    pos = np.searchsorted(ids, wanted)
    bad = (pos >= ids.size) | (ids[np.minimum(pos, ids.size - 1)] != wanted)
    if bad.any():
        raise DataError(f"nsd_ids {wanted[bad][:5].tolist()} are not in {where} (it holds {ids.size} stimuli). {fix}")
    return pos


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """Return `path` if it exists, else stop with a message naming it and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Missing {what}: expected {path}. {fix}")
    return path


def fingerprint(*paths: str | Path) -> str:
    """sha256 over the contents of files and folders (every file under a folder, by relative
    path): what a stage's checkpoint key includes so that a rerun on changed inputs never
    resumes training state made from the old ones."""
    import hashlib

    h = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def read_safetensors(path: str | Path, fix: str) -> dict:
    """`safetensors.torch.load_file` with a missing, empty or truncated file reported as a
    DataError naming the file and `fix` (e.g. "re-run stage X" or "delete checkpoint Y")."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise DataError(f"Missing {path}. {fix}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path} is not a readable safetensors file ({err}); it may be truncated. {fix}") from err
