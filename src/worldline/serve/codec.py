"""Frames on the wire: tensors -> uint8 pictures -> compact bytes, and the binary frame message.

A frame message is one binary WebSocket message::

    uint16 big-endian n | n bytes of JSON header | picture bytes (dream) | picture bytes (real env, optional)

The header says how many bytes each picture has (``sizes``), their format, the frame index, the
sequence number of the last action the frame reflects (for the key-to-frame latency meter) and how
many frames were dropped because the client lagged. Pictures are JPEG by default: at 64x64 a
JPEG (quality 90, no chroma subsampling, so small coloured sprites keep their colour) is ~6x
smaller than raw RGB and the fastest to encode of the compressed formats (benchmarks/bench_serve.py
measures all four). ``raw`` sends the RGB bytes as they are (exact, for tests and local use).
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from worldline.core.errors import WorldlineError

ENCODINGS = ("jpeg", "png", "webp", "raw")
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "raw": "application/octet-stream"}


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    if frame.dim() == 4:
        frame = frame[0]
    pixels = ((frame.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(rearrange(pixels, "c h w -> h w c").cpu().numpy())  # (H, W, 3)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    t = torch.from_numpy(np.array(pixels, dtype=np.uint8)).float() / 127.5 - 1  # a copy: frames may be read-only views
    return rearrange(t, "... h w c -> ... c h w")  # (..., 3, H, W)


def encode(pixels: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """(H, W, 3) uint8 -> bytes in ``encoding``."""
    if encoding == "raw":
        return pixels.tobytes()
    buf = io.BytesIO()
    image = Image.fromarray(pixels, "RGB")
    if encoding == "jpeg":
        image.save(buf, "JPEG", quality=quality, subsampling=0)
    elif encoding == "png":
        image.save(buf, "PNG", compress_level=1)  # level 1: 3x faster than the default, a few % bigger
    elif encoding == "webp":
        image.save(buf, "WEBP", quality=quality, method=0)  # method 0: the fastest encoder setting
    else:
        raise WorldlineError(f"unknown frame encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    return buf.getvalue()


def decode(data: bytes, encoding: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`encode` -> (H, W, 3) uint8 (``shape`` = (H, W) is needed for raw)."""
    if encoding == "raw":
        if shape is None:
            raise WorldlineError("raw frames need their (H, W) to decode")
        return np.frombuffer(data, np.uint8).reshape(shape[0], shape[1], 3)  # (H, W, 3)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pack(header: dict, *pictures: bytes) -> bytes:
    """One binary frame message: header length, JSON header (with ``sizes``), pictures."""
    header = dict(header, sizes=[len(p) for p in pictures])
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">H", len(head)) + head + b"".join(pictures)


def unpack(message: bytes) -> tuple[dict, list[bytes]]:
    """Inverse of :func:`pack` -> (header, pictures)."""
    if len(message) < 2:
        raise WorldlineError(f"a frame message needs at least 2 bytes, got {len(message)}")
    (n,) = struct.unpack(">H", message[:2])
    header = json.loads(message[2 : 2 + n])
    pictures, at = [], 2 + n
    for size in header["sizes"]:
        pictures.append(message[at : at + size])
        at += size
    return header, pictures
