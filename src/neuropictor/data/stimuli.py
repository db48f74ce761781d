"""Procedural stimuli of the synthetic world: scenes of 1-3 objects with known attributes.

Each scene has a background and 1-3 objects, each of a shape, colour, size and position.
The first object is the *primary* one: strictly the largest, drawn last (fully visible) and
named in every caption, so "the caption's shape and colour" is well defined for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.60, 0.20, 0.75),
    "orange": (0.98, 0.55, 0.10),
}
SIZES = {"small": 0.11, "medium": 0.16, "large": 0.23}  # radius, fraction of image width
BACKGROUNDS = {"dark": (0.12, 0.12, 0.14), "grey": (0.50, 0.50, 0.50), "light": (0.86, 0.86, 0.84)}
MAX_OBJECTS = 3
SUPERSAMPLE = 3  # anti-aliasing: render at 3x, then average 3x3 blocks


@dataclass
class Scene:
    background: str
    objects: list[dict]  # each: shape, colour, size, x, y (x, y in [0, 1], y down)


def sample_scene(rng: np.random.Generator) -> Scene:
    """The primary object is strictly larger than every other one, so "the primary object"
    can be read from the image alone (with two equally large objects it could not, and no
    classifier could judge a reconstruction's primary shape on those scenes)."""
    order = sorted(SIZES, key=SIZES.get)  # small, medium, large
    primary = str(rng.choice(order))
    smaller = order[:order.index(primary)]
    n = min(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), len(smaller) + 1)
    sizes = [primary] + sorted((str(s) for s in rng.choice(smaller, size=n - 1)), key=lambda s: -SIZES[s]) \
        if n > 1 else [primary]
    objects = []
    for size in sizes:
        r = SIZES[size]
        objects.append({
            "shape": str(rng.choice(SHAPES)),
            "colour": str(rng.choice(list(COLOURS))),
            "size": str(size),
            "x": float(rng.uniform(r, 1 - r)),
            "y": float(rng.uniform(r, 1 - r)),
        })
    return Scene(background=str(rng.choice(list(BACKGROUNDS))), objects=objects)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (u, v), unit radius, v pointing down."""
    if shape == "circle":
        return u**2 + v**2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "triangle":  # apex up
        return (v <= 0.75) & (v >= -1.0 + 1.75 * np.abs(u) / 0.95)
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
    if shape == "ring":
        d = u**2 + v**2
        return (d <= 1.0) & (d >= 0.5**2)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render(scene: Scene, size: int) -> np.ndarray:
    """Scene -> (size, size, 3) uint8 image."""
    hi = size * SUPERSAMPLE
    canvas = np.empty((hi, hi, 3), np.float32)
    canvas[:] = BACKGROUNDS[scene.background]
    # draw secondary objects first so the primary one stays fully visible
    for obj in reversed(scene.objects):
        r = SIZES[obj["size"]] * hi
        cx, cy = obj["x"] * hi, obj["y"] * hi
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, hi))
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, hi))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        mask = _shape_mask(obj["shape"], (xx - cx) / r, (yy - cy) / r)
        canvas[y0:y1, x0:x1][mask] = COLOURS[obj["colour"]]
    img = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _where(x: float, y: float) -> str:
    col = "left" if x < 0.38 else "right" if x > 0.62 else ""
    row = "top" if y < 0.38 else "bottom" if y > 0.62 else ""
    if not row and not col:
        return "in the center"
    if row and col:
        return f"in the {row} {col}"
    return f"on the {row or col}"


def _name(o: dict, with_size: bool = False) -> str:
    return f"{o['size'] + ' ' if with_size else ''}{o['colour']} {o['shape']}"


def full_caption(scene: Scene) -> str:
    """The one caption naming everything: every object's size, colour and shape, the primary
    object's position and the background. It identifies a scene among others, so it is the
    caption of the retrieval test; `scene_of_row` rebuilds it from the attribute table."""
    p = scene.objects[0]
    rest = "".join(f" and a {_name(o, True)}" for o in scene.objects[1:])
    return f"a {_name(p, True)} {_where(p['x'], p['y'])}{rest} on a {scene.background} background"


def primary_caption(scene: Scene) -> str:
    """The full caption cut after the primary object's name ("a medium red triangle"): in a
    causal text tower its last token's state is the one the full caption has there."""
    return f"a {_name(scene.objects[0], True)}"


def scene_of_row(row) -> Scene:
    """An attribute-table row (see `attribute_row`) back to its scene."""
    objects = [{k: row[f"{k}_{i}"] for k in ("shape", "colour", "size", "x", "y")}
               for i in range(int(row["n_objects"]))]
    return Scene(background=row["background"], objects=objects)


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five captions (in random order), each naming the primary object's shape and colour;
    one of them is `full_caption`."""
    p = scene.objects[0]
    others = scene.objects[1:]
    name = _name
    rest = "".join(f" and a {name(o, True)}" for o in others)
    count = {1: "one object", 2: "two objects", 3: "three objects"}[len(scene.objects)]
    caps = [
        full_caption(scene),
        f"a {name(p)} on a {scene.background} background",
        f"{count}: a {name(p)}{''.join(f', a {name(o)}' for o in others)}",
        f"a picture of a {p['shape']} that is {p['colour']}, {_where(p['x'], p['y'])}",
        f"there is a {name(p, True)}{rest} on a {scene.background} background",
    ]
    rng.shuffle(caps)
    return caps


def attribute_row(scene: Scene) -> dict:
    row = {"n_objects": len(scene.objects), "background": scene.background}
    for k in range(MAX_OBJECTS):
        o = scene.objects[k] if k < len(scene.objects) else None
        for key in ("shape", "colour", "size"):
            row[f"{key}_{k}"] = o[key] if o else ""
        for key in ("x", "y"):
            row[f"{key}_{k}"] = o[key] if o else np.nan
    return row


def make_stimuli(n: int, size: int, rng: np.random.Generator):
    """Return images (n, size, size, 3) uint8, captions (n lists of 5), attribute table."""
    images = np.empty((n, size, size, 3), np.uint8)
    caps, rows = [], []
    for i in range(n):
        scene = sample_scene(rng)
        images[i] = render(scene, size)
        caps.append(captions(scene, rng))
        rows.append(attribute_row(scene))
    return images, caps, pd.DataFrame(rows)
