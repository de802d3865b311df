"""Small test videos whose frames carry their own index, so a test can read which frame it got."""

from __future__ import annotations

import fractions
import struct
from pathlib import Path

import numpy as np

BITS = 8  # frame index in an 8-cell strip of black/white blocks: survives lossy codecs


def frame_with_index(index: int, width: int, height: int, gray: bool = False) -> np.ndarray:
    """A BGR (or gray) frame: mid-grey, with `index` written in binary as blocks along the middle row band."""
    image = np.full((height, width, 3), 128, np.uint8)
    cell = width // BITS
    top, bottom = height // 3, 2 * height // 3
    for bit in range(BITS):
        image[top:bottom, bit * cell : (bit + 1) * cell] = 255 if (index >> bit) & 1 else 0
    return image[:, :, 0].copy() if gray else image


def read_index(rgb: np.ndarray) -> int:
    """The index written by frame_with_index into a frame of the same size (RGB or resized-and-cropped: no)."""
    height, width = rgb.shape[:2]
    cell = width // BITS
    band = rgb[height // 3 : 2 * height // 3, :, 0].astype(float)
    return sum(
        1 << bit for bit in range(BITS) if band[:, bit * cell + cell // 4 : (bit + 1) * cell - cell // 4].mean() > 128
    )


def write_video(
    path: Path, fps: float, frames: int, size: tuple[int, int] = (96, 64), *, fourcc: str = "MJPG", gray: bool = False
) -> Path:
    """Write `frames` indexed frames at `fps` with OpenCV (MJPG .avi by default: fast, near-lossless)."""
    import cv2

    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), isColor=not gray)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        writer.write(frame_with_index(i, width, height, gray))
    writer.release()
    return Path(path)


def write_vfr_video(path: Path, times_ms: list[int], size: tuple[int, int] = (96, 64)) -> Path:
    """Variable frame rate: frame i shown from times_ms[i] (H.264 through PyAV, millisecond time base)."""
    import av

    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        stream.time_base = fractions.Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frame_with_index(i, width, height)[:, :, ::-1].copy(), format="rgb24")
            frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)


def rotate_mp4(src: Path, dst: Path) -> Path:
    """Copy an .mp4 with its track matrix set to a 90-degree rotation (as phones record portrait video)."""
    data = bytearray(Path(src).read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0, "expects a version-0 tkhd box"
    matrix = at + 4 + 4 + 4 * 5 + 8 + 2 * 4  # version/flags, 5 words, reserved, layer/group/volume/reserved
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# extract-features options for tests: both backbones small, random weights (nothing downloaded)
TINY_BACKBONES = [
    "--random-init",
    "--backbone-2d",
    "resnet18",
    "--size-2d",
    "32",
    "--backbone-3d",
    "resnext3d-tiny",
    "--size-3d",
    "32",
]
