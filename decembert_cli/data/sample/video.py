"""Real video files for the sample corpus: coloured shapes doing what the captions describe.

Every segment of a sample video shows its object (a shape in a colour, one look per object) moving
the way its action moves (a path such as a sweep, a circle or a figure eight, plain, spinning or
pulsing; one motion per action) over the video's own background (a colour and a "table" band). So
the object is visible in any single frame (2D features) and the action only over time (3D
features), as in the synthetic features of `corpus.py`, and the same plan decides both.
Videos are MPEG-4 Part 2 in .mp4 at 24 fps, 160 x 120, written by OpenCV; a rendering is a pure
function of the plan, so the same arguments give the same files.
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path

import cv2
import numpy as np

from decembert_cli.data.video import opencv_can_name
from decembert_cli.errors import DecembertError

SIZE = (160, 120)  # width, height
FPS = 24
RADIUS = 24  # object size in pixels
AMPLITUDE = 24  # motion range in pixels (kept inside the centre square, which 2D/3D crops keep)

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
PATHS = ("still", "sweep-x", "sweep-y", "diagonal", "anti-diagonal", "circle", "figure-8", "zigzag", "shake")
MODIFIERS = ("plain", "spin", "pulse")


def object_look(index: int) -> tuple[str, tuple[int, int, int]]:
    """(shape, BGR colour) of object `index`: shapes cycle, hues spread by the golden ratio."""
    hue = (index * 0.6180339887) % 1.0
    sat = (1.0, 0.55)[(index // len(SHAPES)) % 2]
    val = (0.95, 0.65)[(index // (2 * len(SHAPES))) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return SHAPES[index % len(SHAPES)], (int(b * 255), int(g * 255), int(r * 255))


def action_motion(index: int) -> tuple[str, str, float]:
    """(path, modifier, period in seconds) of action `index`: 9 paths x 3 modifiers."""
    return PATHS[index % len(PATHS)], MODIFIERS[(index // len(PATHS)) % len(MODIFIERS)], 1.2 + 0.3 * (index % 3)


def _tri(x: float) -> float:
    """Triangle wave of period 2*pi in [-1, 1]."""
    return 2 / math.pi * math.asin(math.sin(x))


def pose(action: int, tau: float) -> tuple[float, float, float, float]:
    """(dx, dy, scale, angle) of an object `tau` seconds into a segment of `action`."""
    path, modifier, period = action_motion(action)
    th = 2 * math.pi * tau / period
    a = AMPLITUDE
    dx, dy = {
        "still": (0.0, 0.0),
        "sweep-x": (a * math.sin(th), 0.0),
        "sweep-y": (0.0, a * math.sin(th)),
        "diagonal": (0.7 * a * math.sin(th), 0.7 * a * math.sin(th)),
        "anti-diagonal": (0.7 * a * math.sin(th), -0.7 * a * math.sin(th)),
        "circle": (a * math.cos(th), a * math.sin(th)),
        "figure-8": (a * math.sin(th), 0.5 * a * math.sin(2 * th)),
        "zigzag": (a * _tri(th), 0.4 * a * _tri(4 * th)),
        "shake": (6 * math.sin(6 * th), 0.0),
    }[path]
    scale = 1 + 0.4 * math.sin(2 * th) if modifier == "pulse" else 1.0
    angle = 2 * th if modifier == "spin" else 0.0
    return dx, dy, scale, angle


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[np.ndarray]:
    def ring(n: int, radius: float, offset: float = 0.0) -> np.ndarray:
        t = angle + offset + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)

    if shape == "square":
        pts = ring(4, r * 1.2, np.pi / 4)
    elif shape == "triangle":
        pts = ring(3, r * 1.2, -np.pi / 2)
    elif shape == "diamond":
        pts = (ring(4, r * 1.2) - [cx, cy]) * [0.75, 1.25] + [cx, cy]  # tall, standing on a corner
    elif shape == "star":
        outer, inner = ring(5, r * 1.3, -np.pi / 2), ring(5, r * 0.55, -np.pi / 2 + np.pi / 5)
        pts = np.stack([outer, inner], axis=1).reshape(-1, 2)
    elif shape == "cross":
        w = 0.4
        base = np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]
        )
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = base * r @ rot.T + np.array([cx, cy])
    else:  # hexagon
        pts = ring(6, r * 1.1)
    return [np.round(pts * 16).astype(np.int32)]  # 4 fractional bits (cv2 `shift`)


def draw_object(frame: np.ndarray, obj: int, cx: float, cy: float, scale: float, angle: float) -> None:
    shape, colour = object_look(obj)
    r = RADIUS * scale
    centre = (round(cx * 16), round(cy * 16))
    if shape == "circle":
        cv2.circle(frame, centre, round(r * 16), colour, -1, cv2.LINE_AA, 4)
        cv2.line(
            frame,
            centre,
            (round((cx + r * math.cos(angle)) * 16), round((cy + r * math.sin(angle)) * 16)),
            (0, 0, 0),
            2,
            cv2.LINE_AA,
            4,
        )
    elif shape == "ring":
        cv2.circle(frame, centre, round(r * 16), colour, 5, cv2.LINE_AA, 4)
    else:
        cv2.fillPoly(frame, _polygon(shape, cx, cy, r, angle), colour, cv2.LINE_AA, 4)


def object_box(obj: int, cx: float, cy: float, scale: float, angle: float) -> tuple[float, float, float, float]:
    """The tight box (x1, y1, x2, y2) around what `draw_object` draws with the same arguments."""
    shape, _colour = object_look(obj)
    r = RADIUS * scale
    if shape in ("circle", "ring"):
        reach = r + (2.5 if shape == "ring" else 0.0)  # the ring's 5-px stroke is centred on the circle
        return cx - reach, cy - reach, cx + reach, cy + reach
    pts = _polygon(shape, cx, cy, r, angle)[0] / 16
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def background(seed: int, index: int) -> np.ndarray:
    """A video's fixed backdrop: a muted wall colour, a table band and a shelf line."""
    rng = np.random.default_rng([seed, 3, index])
    w, h = SIZE
    frame = np.empty((h, w, 3), np.uint8)
    grey = int(rng.integers(100, 160))
    frame[:] = np.clip(grey + rng.integers(-15, 16, size=3), 0, 255)  # a muted wall
    table = int(rng.integers(int(h * 0.8), int(h * 0.9)))
    frame[table:] = np.clip(grey - 50 + rng.integers(-15, 16, size=3), 0, 255)
    shelf = int(rng.integers(4, 12))
    frame[shelf : shelf + 2] = np.clip(grey + 40 + rng.integers(-20, 21, size=3), 0, 255)
    return frame


def render(plan: dict, seed: int, path: Path, object_index: dict[str, int], action_index: dict[str, int]) -> None:
    """Write the video of one planned sample video to `path` (atomically: a temp file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    w, h = SIZE
    frames = max(1, round(plan["seconds"] * FPS))
    bg = background(seed, plan["index"])
    segments = [(s0 / 100, s1 / 100, object_index[o], action_index[a]) for s0, s1, o, a in plan["segments"]]
    if not opencv_can_name(tmp):
        raise DecembertError(f"{path.parent}: not valid UTF-8, which OpenCV's video writer needs; use another folder")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (w, h))
    if not writer.isOpened():
        raise DecembertError(f"OpenCV cannot write {tmp} (no MPEG-4 encoder?); reinstall opencv-python-headless")
    try:
        seg = 0
        for f in range(frames):
            t = f / FPS
            frame = bg.copy()
            while seg < len(segments) and t >= segments[seg][1]:
                seg += 1
            if seg < len(segments) and t >= segments[seg][0]:
                start, _end, obj, action = segments[seg]
                dx, dy, scale, angle = pose(action, t - start)
                draw_object(frame, obj, w / 2 + dx, h / 2 + dy, scale, angle)
            writer.write(frame)
    finally:
        writer.release()
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise DecembertError(f"OpenCV wrote nothing to {tmp}; reinstall opencv-python-headless")
    os.replace(tmp, path)
