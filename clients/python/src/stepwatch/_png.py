"""A minimal PNG encoder (8-bit gray, RGB or RGBA; filter 0 on every row), and telling
PNG, JPEG and WebP apart by their first bytes. Stdlib only (zlib, struct): the SDK
encodes images on its sender thread without Pillow."""

from __future__ import annotations

import struct
import sys
import zlib

#: PNG colour type by channel count: gray, RGB, RGBA.
COLOR_TYPES = {1: 0, 3: 2, 4: 6}
#: zlib level: 6 is zlib's default; lower levels cost less time for larger files.
DEFAULT_LEVEL = 6

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(
    width: int,
    height: int,
    channels: int,
    pixels: bytes | bytearray | memoryview,
    level: int = DEFAULT_LEVEL,
) -> bytes:
    """``pixels``: ``height`` rows of ``width * channels`` bytes, row after row (HWC,
    uint8). Returns the PNG file's bytes. Raises ValueError on a bad size or layout."""
    color = COLOR_TYPES.get(channels)
    if color is None:
        raise ValueError(f"a PNG here has 1, 3 or 4 channels, not {channels}")
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}x{height} pixels")
    stride = width * channels
    view = memoryview(pixels).cast("B")
    if len(view) != stride * height:
        raise ValueError(f"{len(view)} bytes for {width}x{height}x{channels} pixels")
    np = sys.modules.get("numpy")
    if np is not None:  # one C call instead of a loop over rows (less time holding the GIL)
        rows = np.frombuffer(view, dtype=np.uint8).reshape(height, stride)
        raw: bytes | bytearray = np.hstack((np.zeros((height, 1), np.uint8), rows)).tobytes()
    else:
        raw = bytearray((stride + 1) * height)  # each row: filter byte 0, then the row
        for y in range(height):
            start = y * (stride + 1) + 1
            raw[start : start + stride] = view[y * stride : (y + 1) * stride]
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw, level)),
            _chunk(b"IEND", b""),
        )
    )


def sniff(data: bytes | bytearray | memoryview) -> str | None:
    """The image type of encoded bytes, told by their first bytes: ``image/png``,
    ``image/jpeg``, ``image/webp``, or None."""
    head = bytes(memoryview(data)[:12])
    if head.startswith(PNG_SIGNATURE):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Reads back what :func:`encode_png` writes (8-bit, no interlace, any filter):
    ``(width, height, channels, pixels)``. For tests and checks, not a general decoder."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos = len(PNG_SIGNATURE)
    idat = b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if crc != zlib.crc32(kind + body):
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace != 0:
                raise ValueError("only 8-bit, non-interlaced PNGs")
            channels = {v: k for k, v in COLOR_TYPES.items()}[color]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 255
        out += row
        prev = row
    return width, height, channels, bytes(out)
