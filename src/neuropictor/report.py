"""Figures (and later tables) shared by the notebooks."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith("module://") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (PNG) and return its path; the figure stays open for display."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def stimulus_grid(images: np.ndarray, captions: list[str] | None = None, cols: int = 6):
    """Images in a grid, each with its (wrapped) caption."""
    n = len(images)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        ax.imshow(images[i])
        if captions is not None:
            ax.set_title("\n".join(textwrap.wrap(captions[i], 24)), fontsize=7)
    fig.tight_layout()
    return fig


def surface_maps(maps: dict[str, np.ndarray], mask: np.ndarray | None = None, cmaps: dict | None = None,
                 vranges: dict | None = None, view: str = "posterior", title_prefix: str = ""):
    """Vertex maps (2 x 10242, left then right) on nilearn's inflated fsaverage5, one row each."""
    from nilearn import plotting

    from .data import cortex

    meshes = cortex.fsaverage5()["meshes"]
    n = cortex.N_VERTS
    fig, axes = plt.subplots(len(maps), 2, figsize=(6.4, 3.0 * len(maps)),
                             subplot_kw={"projection": "3d"}, squeeze=False)
    for row, (name, values) in enumerate(maps.items()):
        for h, hemi in enumerate(cortex.HEMIS):
            val = np.asarray(values[h * n:(h + 1) * n], float).copy()
            if mask is not None:
                val[~mask[h * n:(h + 1) * n]] = np.nan
            vmin, vmax = (vranges or {}).get(name, (np.nanmin(val), np.nanmax(val)))
            plotting.plot_surf(meshes["inflated"].parts[hemi], surf_map=val, hemi=hemi, view=view,
                               cmap=(cmaps or {}).get(name, "viridis"), axes=axes[row, h],
                               engine="matplotlib", vmin=vmin, vmax=vmax, colorbar=h == 1,
                               title=f"{title_prefix}{name} ({hemi})")
    return fig


def flatmap_grid(flatmaps: np.ndarray, mask: np.ndarray, titles: list[str] | None = None,
                 cols: int = 6, cmap: str = "RdBu_r", vlim: float | None = None):
    """Flatmap images (n, S, S) with off-cortex pixels blank and a shared colour scale."""
    n = len(flatmaps)
    rows = int(np.ceil(n / cols))
    vlim = vlim or float(np.percentile(np.abs(flatmaps[:, mask]), 99)) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        img = np.where(mask, flatmaps[i], np.nan)
        im = ax.imshow(img, cmap=cmap, vmin=-vlim, vmax=vlim)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="z")
    return fig


def format_metric(metric: str, value: float) -> str:
    """Table 1 style: identification scores as percentages, the others as .3f without the 0."""
    if value != value:  # NaN
        return "—"
    base = metric.rstrip("†")
    if base in ("AlexNet(2)", "AlexNet(5)", "Inception", "CLIP") or "accuracy" in base:
        return f"{100 * value:.1f}%"
    return f"{value:.3f}".replace("0.", ".", 1) if abs(value) < 1 else f"{value:.3f}"


def write_table(df, stem: str | Path, caption: str = "") -> dict[str, Path]:
    """A results table (rows: methods, columns: metrics) as CSV (raw numbers), Markdown and
    LaTeX (formatted as the paper's Tables 1 and 2; text columns, such as Table 2's
    "fMRI Enc.", are shown as they are). Returns the paths written."""
    import pandas as pd

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    shown = pd.DataFrame({c: [format_metric(c, v) if pd.api.types.is_numeric_dtype(df[c]) else str(v) for v in df[c]]
                          for c in df.columns}, index=df.index)
    if isinstance(df.index, pd.MultiIndex):  # ("image latent z", "CNN") -> "image latent z / CNN"
        shown.index = [" / ".join(str(part) for part in row) for row in df.index]
    paths = {"csv": stem.with_suffix(".csv"), "md": stem.with_suffix(".md"), "tex": stem.with_suffix(".tex")}
    df.to_csv(paths["csv"], float_format="%.6f")
    paths["md"].write_text((f"{caption}\n\n" if caption else "") + shown.to_markdown(disable_numparse=True) + "\n")
    paths["tex"].write_text(shown.to_latex(escape=True, caption=caption or None,
                                           column_format="l" + "r" * len(df.columns)))
    return paths
