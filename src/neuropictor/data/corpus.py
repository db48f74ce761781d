"""The foundation's training corpus: fresh procedural scenes, drawn on demand (the role LAION
plays for Stable Diffusion).

Scene `i` of a corpus is a pure function of `(seed, i)`, so the corpus is as large as
training needs, never stored, identical on every machine, and a resumed run sees exactly the
scenes it would have seen. It uses the synthetic world's stimulus generator
(`data.stimuli`) with a seed of its own: the NSD-like world's shared test images are drawn
from another seed and never enter it.

    corpus = SceneCorpus(seed=1234, size=64)
    images, ids, attrs = corpus.batch(range(0, 32))   # (32, 3, 64, 64) in [0, 1], ...
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .stimuli import attribute_row, captions, full_caption, primary_caption, render, sample_scene, scene_of_row


@dataclass(frozen=True)
class CorpusItem:
    image: np.ndarray  # (size, size, 3) uint8
    captions: list[str]  # five; column 0 is the full caption
    attributes: dict


class SceneCorpus:
    """Scenes indexed by a non-negative integer; `len()` is the range training may draw from.

    Held-out scenes for the foundation's quality checks are drawn from the top of the index
    range (`held_out(n)`), which training batches (drawn from the bottom) never reach."""



    def __init__(self, seed: int, size: int = 64, length: int = 10**12):
        self.seed, self.size, self.length = int(seed), int(size), int(length)

    def __len__(self) -> int:
        return self.length

    def item(self, i: int) -> CorpusItem:
        if not 0 <= int(i) < self.length:
            raise IndexError(f"scene {i} is outside the corpus (0 .. {self.length - 1})")
        rng = np.random.default_rng([self.seed, int(i)])
        scene = sample_scene(rng)
        caps = captions(scene, rng)
        full = full_caption(scene)
        caps = [full] + [c for c in caps if c != full]
        return CorpusItem(render(scene, self.size), caps, attribute_row(scene))

    def batch(self, rows) -> tuple[torch.Tensor, list[list[str]], pd.DataFrame]:
        """Scenes `rows` -> images (n, 3, size, size) float in [0, 1], their captions (full
        caption first), and their attribute table (the layout of `data.stimuli`)."""
        items = [self.item(int(i)) for i in rows]
        images = torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255
        return images, [it.captions for it in items], pd.DataFrame([it.attributes for it in items])

    def held_out(self, n: int) -> tuple[torch.Tensor, list[list[str]], pd.DataFrame]:
        """The last `n` scenes of the index range: never in a training batch."""
        return self.batch(range(self.length - n, self.length))


def primary_captions(attributes: pd.DataFrame) -> list[str]:
    """Each attribute-table row's full caption cut after the primary object's name."""
    return [primary_caption(scene_of_row(row)) for _, row in attributes.iterrows()]


def shape_variants(row, shapes=None) -> list[str]:
    """The full caption of an attribute-table row with the primary object's shape replaced by
    each other shape (the hard negatives of the CLIP pair, and its shape-pick test)."""
    from .stimuli import SHAPES, Scene, scene_of_row

    scene = scene_of_row(row)
    out = []
    for shape in shapes or SHAPES:
        if shape != scene.objects[0]["shape"]:
            objects = [dict(scene.objects[0], shape=shape)] + scene.objects[1:]
            out.append(full_caption(Scene(scene.background, objects)))
    return out


class ScenePool:
    """A corpus's first `n` scenes rendered once and kept as uint8 (n x 12 KB at 64 px), with
    their captions and attributes: what the foundation's models train on."""

    def __init__(self, corpus: SceneCorpus, n: int, chunk: int = 2000, progress: bool = True):
        from tqdm.auto import tqdm

        images, caps, attrs = [], [], []
        for start in tqdm(range(0, n, chunk), desc=f"rendering {n} corpus scenes", disable=not progress):
            rows = range(start, min(start + chunk, n))
            items = [corpus.item(i) for i in rows]
            images.append(torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).contiguous())
            caps += [it.captions for it in items]
            attrs += [it.attributes for it in items]
        self.images = torch.cat(images)  # (n, 3, S, S) uint8
        self.captions = caps  # n lists of 5, the full caption first
        self.attributes = pd.DataFrame(attrs)

    def __len__(self) -> int:
        return len(self.images)

    def float_images(self, rows=slice(None)) -> torch.Tensor:
        return self.images[rows].float() / 255


class UInt8Batches:
    """Like `train.TensorBatches`, with a uint8 image tensor first, handed out as floats in
    [0, 1] (or [-1, 1] with `signed`): a 100k-scene pool stays 1.2 GB instead of 4.9 GB."""

    def __init__(self, images: torch.Tensor, *others: torch.Tensor, signed: bool = False):
        if any(len(o) != len(images) for o in others):
            raise ValueError("all tensors must have the same number of rows")
        self.images, self.others, self.signed = images, others, signed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows):
        x = self.images[rows].float() / 255
        return (2 * x - 1 if self.signed else x, *(o[rows] for o in self.others))
