"""Media events: text samples, images and histograms (see docs/DESIGN.md, "Media").

Each call checks locally what the relay would refuse and, rather than raise into the
training loop, logs a warning once per name and sends nothing. None of numpy, torch or
Pillow is imported here: an object is handled as one when it is one (its module is
loaded already, or it quacks like one).

Images: the training thread only copies the pixels (a contiguous copy of the array or
tensor, the bytes of encoded images) into a :class:`PendingImage` that rides in the
event (``_media``) to the sender; the sender thread turns it into PNG bytes, uploads
them (``PUT /api/runs/{run}/media/{sha256}``) and only then sends the event with its
``media`` reference (see :mod:`stepwatch._sender`). Pending pixels are bounded in
memory (``RelaySender.media_max_bytes``); past it an image is dropped and counted.
"""

from __future__ import annotations

import io
import logging
import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from . import _png, _session
from ._emitter import training_emitter

_log = logging.getLogger("stepwatch")

#: Limits of the wire contract (docs/DESIGN.md).
MAX_NAME = 128  # bytes of UTF-8
MAX_CAPTION = 1000  # bytes
MAX_TEXT_BYTES = 64 * 1024  # text, prompt, completion, columns and cells together
MAX_INDEX = 1024  # images at one step under one name
MAX_COLUMNS = 32
MAX_ROWS = 1000
MAX_BINS = 512
#: Pixels the relay takes at most by default (``--media-max-pixels``).
MAX_PIXELS = 40_000_000

_warned: set[tuple[str, str]] = set()


def warn_once(kind: str, name: str, message: str) -> None:
    """Logs ``message`` once per ``(kind, name)``, and tells the run's log (a ``log``
    event: the dashboard shows it; the SDK's own warnings are not captured)."""
    key = (kind, name)
    if key in _warned:
        return
    _warned.add(key)
    text = f"stepwatch: {kind} {name!r} not sent: {message}"
    _log.warning("%s", text)
    try:
        training_emitter.emit("log", level="warning", logger="stepwatch", message=text)
    except Exception:
        pass


def _check_name(kind: str, name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        warn_once(kind, str(name), "the name must be a non-empty string")
        return None
    if not name.strip() or any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name):
        warn_once(kind, name, "the name must not be blank or hold control characters")
        return None
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        warn_once(kind, name, f"the name is longer than {MAX_NAME} bytes")
        return None
    return name


def _check_caption(kind: str, name: str, caption: Any) -> bool:
    if caption is None:
        return True
    if not isinstance(caption, str):
        warn_once(kind, name, "the caption must be a string")
        return False
    if len(caption.encode("utf-8", "surrogatepass")) > MAX_CAPTION:
        warn_once(kind, name, f"the caption is longer than {MAX_CAPTION} bytes")
        return False
    return True


def _step(step: Any) -> int | None:
    if step is None:
        return _session.current_step()
    try:
        return int(step)
    except (TypeError, ValueError):
        return _session.current_step()


def _emit(event: str, **fields: Any) -> dict[str, Any]:
    return training_emitter.emit(event, **{k: v for k, v in fields.items() if v is not None})


# -- text ---------------------------------------------------------------------------------
_CELL_TYPES = (str, int, float, bool, type(None))


def _text_size(parts: Sequence[Any]) -> int:
    """Bytes of text as the relay counts them: each string's UTF-8, 8 for another cell."""
    return sum(len(p.encode("utf-8", "surrogatepass")) if isinstance(p, str) else 8 for p in parts)


def log_text(
    name: str,
    text: str | None = None,
    *,
    prompt: str | None = None,
    completion: str | None = None,
    columns: Sequence[str] | None = None,
    rows: Sequence[Sequence[Any]] | None = None,
    step: int | None = None,
    caption: str | None = None,
) -> dict[str, Any] | None:
    """A ``text_sample`` event: ``text``; or ``prompt`` and ``completion``; or a table of
    ``columns`` (up to 32 strings) and ``rows`` (up to 1,000 lists of str, int, float,
    bool or None, each as long as ``columns``). At most 64 KiB of text in all. ``step``
    defaults to the SDK's current global step. Returns the event, or None when it was
    refused (a warning, once per name; never an exception)."""
    kind = "text_sample"
    if _check_name(kind, name) is None:
        return None
    if not _check_caption(kind, name, caption):
        return None
    fields: dict[str, Any] = {}
    strings: list[Any] = []
    if columns is not None or rows is not None:
        if text is not None or prompt is not None or completion is not None:
            warn_once(kind, name, "give text, prompt/completion or columns/rows, not several")
            return None
        cols = list(columns or ())
        if not cols or len(cols) > MAX_COLUMNS or not all(isinstance(c, str) for c in cols):
            warn_once(kind, name, f"columns must be 1 to {MAX_COLUMNS} strings")
            return None
        table: list[list[Any]] = []
        for r in rows or ():
            if isinstance(r, (str, bytes)) or not isinstance(r, Sequence):
                warn_once(kind, name, "each row must be a list of cells")
                return None
            row = [_cell(c) for c in r]
            if len(row) != len(cols):
                warn_once(kind, name, f"a row has {len(row)} cells for {len(cols)} columns")
                return None
            if any(not isinstance(c, _CELL_TYPES) for c in row):
                warn_once(kind, name, "cells must be str, int, float, bool or None")
                return None
            table.append(row)
            if len(table) > MAX_ROWS:
                warn_once(kind, name, f"more than {MAX_ROWS} rows")
                return None
        strings += cols
        strings += [c for row in table for c in row]
        fields = {"columns": cols, "rows": table}
    elif prompt is not None or completion is not None:
        if text is not None:
            warn_once(kind, name, "give text or prompt/completion, not both")
            return None
        if not all(isinstance(p, str) for p in (prompt, completion) if p is not None):
            warn_once(kind, name, "prompt and completion must be strings")
            return None
        fields = {"prompt": prompt, "completion": completion}
        strings += [p for p in (prompt, completion) if p is not None]
    elif isinstance(text, str):
        fields = {"text": text}
        strings.append(text)
    else:
        warn_once(kind, name, "give text (a string), prompt/completion, or columns/rows")
        return None
    size = _text_size(strings)
    if size > MAX_TEXT_BYTES:
        warn_once(kind, name, f"{size} bytes of text, over the {MAX_TEXT_BYTES} bytes allowed")
        return None
    return _emit(kind, name=name, step=_step(step), caption=caption, **fields)


def _cell(value: Any) -> Any:
    """numpy / torch scalars as plain numbers; everything else as it is."""
    if isinstance(value, _CELL_TYPES):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            v = item()
            if isinstance(v, _CELL_TYPES):
                return v
        except Exception:
            pass
    return value


# -- images -------------------------------------------------------------------------------
def _module_of(obj: Any) -> str:
    return (type(obj).__module__ or "").split(".")[0]


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_ndarray(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _is_pil(obj: Any) -> bool:
    return callable(getattr(obj, "save", None)) and isinstance(getattr(obj, "mode", None), str)


def image_layout(shape: Sequence[int], dataformats: str | None, chw_default: bool) -> str:
    """``HW``, ``HWC`` or ``CHW`` for an array of ``shape``; ValueError when it is none
    of them. ``chw_default``: a 3-D shape whose first and last dims could both be
    channels is taken as CHW (torch, like TensorBoard), else HWC (numpy)."""
    nd = len(shape)
    if dataformats is not None:
        fmt = dataformats.upper()
        if fmt not in ("HW", "HWC", "CHW"):
            raise ValueError(f"dataformats {dataformats!r} is not HW, HWC or CHW")
        if len(fmt) != nd:
            raise ValueError(f"dataformats {fmt} for an array of shape {tuple(shape)}")
        layout = fmt
    elif nd == 2:
        layout = "HW"
    elif nd == 3:
        first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
        if first and (chw_default or not last):
            layout = "CHW"
        elif last:
            layout = "HWC"
        else:
            raise ValueError(f"shape {tuple(shape)}: no dimension of 1, 3 or 4 channels")
    else:
        raise ValueError(f"an image is 2-D or 3-D, not of shape {tuple(shape)}")
    if layout == "HWC" and shape[2] not in (1, 3, 4):
        raise ValueError(f"{shape[2]} channels (1, 3 or 4 are images)")
    if layout == "CHW" and shape[0] not in (1, 3, 4):
        raise ValueError(f"{shape[0]} channels (1, 3 or 4 are images)")
    h, w = (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"an empty image of shape {tuple(shape)}")
    if h * w > MAX_PIXELS:
        raise ValueError(f"{h * w} pixels, over the {MAX_PIXELS} the relay takes")
    return layout


class PendingImage:
    """An image on its way: a private copy of the pixels (``array``: numpy array,
    torch tensor, Pillow image) or the encoded bytes, made on the training thread;
    :meth:`encode` (sender thread) gives the bytes to upload and forgets the copy."""

    __slots__ = ("source", "kind", "layout", "nbytes", "mime")

    def __init__(self, source: Any, kind: str, layout: str = "", nbytes: int = 0) -> None:
        self.source = source
        self.kind = kind  # "bytes", "numpy", "torch", "pil", "raw:<mode>:<w>:<h>"
        self.layout = layout
        self.nbytes = nbytes
        self.mime = ""

    def __repr__(self) -> str:
        state = "pending" if self.source is not None else "sent"
        return f"<stepwatch image {self.kind} {self.nbytes} bytes, {state}>"

    def encode(self, level: int = _png.DEFAULT_LEVEL) -> bytes:
        """The bytes to upload (PNG unless they came encoded). Raises on a bad image."""
        src, self.source = self.source, None
        if src is None:
            raise ValueError("image already encoded")
        if self.kind == "bytes":
            data = bytes(src)
        elif self.kind == "numpy":
            data = _png.encode_png(*pixels_of_array(src, self.layout), level=level)
        elif self.kind == "torch":
            data = _png.encode_png(*pixels_of_tensor(src, self.layout), level=level)
        elif self.kind.startswith("raw:"):
            _, mode, w, h = self.kind.split(":")
            channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
            data = _png.encode_png(int(w), int(h), channels, src, level=level)
        else:  # "pil": any other mode, saved by Pillow itself
            buf = io.BytesIO()
            src.save(buf, format="PNG")
            data = buf.getvalue()
        mime = _png.sniff(data)
        if mime is None:
            raise ValueError("the bytes are no PNG, JPEG or WebP image")
        self.mime = mime
        return data


def pixels_of_array(a: Any, layout: str) -> tuple[int, int, int, bytes]:
    """A numpy array as ``(width, height, channels, HWC uint8 bytes)``: uint8 as it is,
    floats taken as [0, 1] (scaled to 0..255 and clipped; NaN as 0), bool as 0/255,
    other integers clipped to 0..255."""
    np = sys.modules["numpy"]
    if layout == "CHW":
        a = a.transpose(1, 2, 0)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * np.uint8(255)
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if a.dtype.kind not in "iu":
            raise ValueError(f"pixels of dtype {a.dtype}")
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        h, w = a.shape
        c = 1
    else:
        h, w, c = a.shape
    return w, h, c, np.ascontiguousarray(a).tobytes()


def pixels_of_tensor(t: Any, layout: str) -> tuple[int, int, int, bytes]:
    """A torch tensor (any device) as :func:`pixels_of_array` reads an array."""
    torch = sys.modules["torch"]
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    if "numpy" in sys.modules:
        try:
            return pixels_of_array(t.numpy(), layout)
        except (RuntimeError, TypeError):
            pass
    # No numpy: the same conversion in torch, the bytes read from the tensor's memory.
    if layout == "CHW":
        t = t.permute(1, 2, 0)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8) * 255
    elif t.is_floating_point():
        t = torch.nan_to_num(t.float(), nan=0.0, posinf=1.0, neginf=0.0)
        t = (t * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    elif t.dtype != torch.uint8:
        t = t.clamp(0, 255).to(torch.uint8)
    t = t.contiguous()
    h, w = t.shape[0], t.shape[1]
    c = t.shape[2] if t.dim() == 3 else 1
    import ctypes

    return w, h, c, ctypes.string_at(t.data_ptr(), t.numel())


def pending_image(image: Any, dataformats: str | None = None) -> PendingImage:
    """The training thread's part of :func:`log_image`: checks the image and copies its
    pixels. Raises ValueError / TypeError saying what is wrong with it."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if _png.sniff(data) is None:
            raise ValueError("bytes that are no PNG, JPEG or WebP image")
        return PendingImage(data, "bytes", nbytes=len(data))
    if _is_tensor(image):
        t = image.detach()
        layout = image_layout(tuple(t.shape), dataformats, chw_default=True)
        if t.is_complex():
            raise ValueError(f"pixels of dtype {t.dtype}")
        t = t.clone()  # on its own device: a GPU tensor is copied there, asynchronously
        return PendingImage(t, "torch", layout, t.element_size() * t.numel())
    if _is_ndarray(image):
        layout = image_layout(image.shape, dataformats, chw_default=False)
        if image.dtype.kind not in "biuf":
            raise ValueError(f"pixels of dtype {image.dtype}")
        a = image.copy()
        return PendingImage(a, "numpy", layout, a.nbytes)
    if _is_pil(image):
        mode = image.mode
        size = getattr(image, "size", None)
        if mode in ("L", "RGB", "RGBA") and callable(getattr(image, "tobytes", None)) and size:
            w, h = int(size[0]), int(size[1])
            if w < 1 or h < 1 or w * h > MAX_PIXELS:
                raise ValueError(f"an image of {w}x{h} pixels")
            raw = image.tobytes()
            return PendingImage(raw, f"raw:{mode}:{w}:{h}", nbytes=len(raw))
        copy = image.copy() if callable(getattr(image, "copy", None)) else image
        w, h = size if size else (0, 0)
        return PendingImage(copy, "pil", nbytes=max(1, int(w) * int(h) * 4))
    module = _module_of(image)
    if module == "numpy" or hasattr(image, "__array_interface__"):
        np = sys.modules.get("numpy")
        if np is not None:
            return pending_image(np.asarray(image), dataformats)
    raise TypeError(
        f"{type(image).__name__} is no image: give PNG/JPEG/WebP bytes, a PIL image, "
        "a numpy array or a torch tensor"
    )


def log_image(
    name: str,
    image: Any,
    *,
    step: int | None = None,
    caption: str | None = None,
    index: int | None = None,
    dataformats: str | None = None,
) -> dict[str, Any] | None:
    """An ``image`` event. ``image``: bytes of a PNG, JPEG or WebP (sent as they are),
    a PIL image, a numpy array or a torch tensor (HW, HWC or CHW; a tensor is CHW when
    its first dim could be channels, like TensorBoard; an array HWC unless only its
    first dim could be; ``dataformats`` says it instead). The training thread only
    copies the pixels; PNG encoding and the upload happen on the sender thread, and the
    event follows once the relay holds the bytes. ``index``: the image's place among
    several at one step. Returns the event (without its ``media`` reference, filled in
    by the sender), or None when the image was refused or dropped."""
    kind = "image"
    if _check_name(kind, name) is None:
        return None
    if not _check_caption(kind, name, caption):
        return None
    if index is not None and (
        isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_INDEX
    ):
        warn_once(kind, name, f"index must be an int from 0 to {MAX_INDEX - 1}")
        return None
    fields: dict[str, Any] = {"name": name, "step": _step(step), "caption": caption}
    fields["index"] = index
    sender = _session.media_sender()
    if sender is None:
        # Not connected (or a rank that does not report images): the event for the
        # emitter's listeners only; no pixels are copied.
        return _emit(kind, **fields)
    try:
        item = pending_image(image, dataformats)
    except Exception as e:
        warn_once(kind, name, str(e))
        return None
    if not sender.hold_media(item.nbytes):
        return None  # over the bound of pending media: dropped, counted
    return _emit(kind, _media=item, **fields)


# -- histograms ---------------------------------------------------------------------------
def _edges(lo: float, hi: float, n: int) -> list[float]:
    if not lo < hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = [lo * (1.0 - i / n) + hi * (i / n) for i in range(n + 1)]
    edges[0], edges[-1] = lo, hi
    if any(not b > a for a, b in zip(edges, edges[1:])):
        return [lo, hi]  # too narrow a range for n bins in floats: one bin
    return edges


def histogram_of_list(values: Sequence[Any], bins: int) -> dict[str, Any]:
    """Pure-Python binning: ``edges``, ``counts``, ``min``, ``max``, ``sum``, ``count``
    of the finite values, ``nonfinite`` when some were not."""
    vals = list(map(float, values))
    total = sum(vals)
    if math.isfinite(total):  # no NaN or infinity among them: no pass to filter them
        finite = vals
    else:
        finite = [v for v in vals if v - v == 0.0]  # inf - inf and nan - nan are nan
        total = math.fsum(finite) if finite else 0.0
    nonfinite = len(vals) - len(finite)
    out: dict[str, Any]
    if not finite:
        out = {"edges": [0.0, 1.0], "counts": [0], "count": 0}
    else:
        lo, hi = min(finite), max(finite)
        edges = _edges(lo, hi, bins)
        n = len(edges) - 1
        first, last = edges[0], edges[-1]
        span = last - first
        if math.isfinite(span):
            scale = n / span
            tally = Counter([int((v - first) * scale) for v in finite])
        else:  # the range overflows a float: halve everything
            scale = n / (last * 0.5 - first * 0.5)
            tally = Counter([int((v * 0.5 - first * 0.5) * scale) for v in finite])
        counts = [0] * n
        for i, c in tally.items():
            counts[min(max(i, 0), n - 1)] += c
        out = {
            "edges": edges,
            "counts": counts,
            "min": lo,
            "max": hi,
            "sum": total,
            "count": len(finite),
        }
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def histogram_of_array(a: Any, bins: int) -> dict[str, Any]:
    """numpy's binning of an array's finite values (the same fields)."""
    np = sys.modules["numpy"]
    a = np.asarray(a).ravel()
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"values of dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    mask = np.isfinite(a)
    nonfinite = int(a.size - np.count_nonzero(mask))
    if nonfinite:
        a = a[mask]
    out: dict[str, Any]
    if a.size == 0:
        out = {"edges": [0.0, 1.0], "counts": [0], "count": 0}
    else:
        lo, hi = float(a.min()), float(a.max())
        edges = _edges(lo, hi, bins)
        counts, _ = np.histogram(a, bins=np.asarray(edges))
        out = {
            "edges": edges,
            "counts": [int(c) for c in counts],
            "min": lo,
            "max": hi,
            "sum": float(a.sum()),
            "count": int(a.size),
        }
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def tensor_summary(t: Any, bins: int) -> Any:
    """On the tensor's own device, no synchronisation: one float64 tensor of
    ``bins + 5`` values, ``[min, max, sum, count, nonfinite, counts...]`` of its finite
    values, binned over ``[min, max]`` (widened by 0.5 each side when they are equal).
    Many of them stack into one device-to-host copy (:func:`summary_to_event`)."""
    torch = sys.modules["torch"]
    x = t.detach().reshape(-1)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_complex():
        raise ValueError(f"values of dtype {x.dtype}")
    wide_types = (torch.float64, torch.int64, torch.int32)
    dt = (
        torch.float64
        if x.dtype in wide_types or x.element_size() >= 4 and not x.is_floating_point()
        else torch.float32
    )
    x = x.to(dt)
    if x.device.type == "cpu" and x.numel():
        # On the CPU a value read back costs nothing: three passes when all is finite.
        lo_t, hi_t = torch.aminmax(x)
        lo, hi = float(lo_t), float(hi_t)
        if math.isfinite(lo) and math.isfinite(hi):
            if not lo < hi:
                lo, hi = lo - 0.5, hi + 0.5
            counts = torch.histc(x, bins, lo, hi).to(torch.float64)
            head = torch.tensor(
                [float(lo_t), float(hi_t), float(x.sum()), x.numel(), 0],
                dtype=torch.float64,
            )
            return torch.cat([head, counts])
    return summary_no_sync(x, bins)


def summary_no_sync(x: Any, bins: int) -> Any:
    """:func:`tensor_summary` of a flat float tensor without reading anything back (the
    path of a GPU tensor)."""
    torch = sys.modules["torch"]
    dt = x.dtype
    finite = torch.isfinite(x)
    inf = torch.full((), float("inf"), dtype=dt, device=x.device)  # a fill, not a copy
    lo = torch.where(finite, x, inf).min() if x.numel() else inf
    hi = torch.where(finite, x, -inf).max() if x.numel() else -inf
    wide = hi <= lo
    lo_b = torch.where(wide, lo - 0.5, lo)
    hi_b = torch.where(wide, hi + 0.5, hi)
    zero = torch.zeros((), dtype=dt, device=x.device)
    xs = torch.where(finite, x, zero)
    pos = ((xs - lo_b) * (bins / (hi_b - lo_b))).floor_()
    idx = pos.nan_to_num_(0.0).clamp_(0, bins - 1).to(torch.int64)  # NaN: nothing finite
    cdt = torch.float64 if x.numel() > (1 << 24) else torch.float32
    counts = torch.zeros(bins, dtype=cdt, device=x.device).scatter_add_(0, idx, finite.to(cdt))
    n = finite.sum().to(torch.float64)
    head = torch.stack(
        [
            lo.to(torch.float64),
            hi.to(torch.float64),
            xs.sum().to(torch.float64),
            n,
            x.numel() - n,
        ]
    )
    return torch.cat([head, counts.to(torch.float64)])


def summary_to_event(row: Sequence[float], bins: int) -> dict[str, Any]:
    """One row of :func:`tensor_summary`, back on the host, as a histogram's fields."""
    lo, hi, total, count, nonfinite = row[:5]
    out: dict[str, Any]
    if count <= 0:
        out = {"edges": [0.0, 1.0], "counts": [0], "count": 0}
    else:
        counts = [int(round(c)) for c in row[5 : 5 + bins]]
        edges = _edges(lo, hi, bins)
        if len(edges) != bins + 1:  # too narrow for the bins: everything in one
            counts = [sum(counts)]
        out = {
            "edges": edges,
            "counts": counts,
            "min": lo,
            "max": hi,
            "sum": total,
            "count": int(count),
        }
    if nonfinite:
        out["nonfinite"] = int(nonfinite)
    return out


def histogram_of_tensor(t: Any, bins: int) -> dict[str, Any]:
    """A torch tensor binned on its device; only the ``bins + 5`` numbers come back."""
    return summary_to_event(tensor_summary(t, bins).cpu().tolist(), bins)


def _given_histogram(edges: Any, counts: Any) -> dict[str, Any]:
    e = [float(v) for v in _as_list(edges)]
    c = [float(v) for v in _as_list(counts)]
    n = len(c)
    if not 1 <= n <= MAX_BINS:
        raise ValueError(f"{n} counts (1 to {MAX_BINS} bins)")
    if len(e) != n + 1:
        raise ValueError(f"{len(e)} edges for {n} counts (n + 1 needed)")
    if not all(math.isfinite(v) for v in e) or any(not b > a for a, b in zip(e, e[1:])):
        raise ValueError("edges must be finite and increasing")
    if not all(math.isfinite(v) and v >= 0 for v in c):
        raise ValueError("counts must be finite and non-negative")
    ints = [int(v) if v.is_integer() else v for v in c]
    return {"edges": e, "counts": ints}


def _as_list(values: Any) -> list[Any]:
    tolist = getattr(values, "tolist", None)
    if callable(tolist):
        out = tolist()
        return out if isinstance(out, list) else [out]
    return list(values)


def histogram_fields(values: Any, bins: int) -> dict[str, Any]:
    """The histogram of ``values`` (list, tuple, numpy array, torch tensor)."""
    if _is_tensor(values):
        return histogram_of_tensor(values, bins)
    if _is_ndarray(values):
        return histogram_of_array(values, bins)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{type(values).__name__} is no list of numbers")
    return histogram_of_list(list(values), bins)


def log_histogram(
    name: str,
    values: Any = None,
    *,
    edges: Sequence[float] | None = None,
    counts: Sequence[float] | None = None,
    bins: int = 64,
    step: int | None = None,
) -> dict[str, Any] | None:
    """A ``histogram`` event: ``values`` (a list or tuple of numbers, a numpy array, a
    torch tensor: binned into ``bins`` equal bins over their range, a tensor on its own
    device) or ready ``edges`` (n + 1 increasing) and ``counts`` (n), 1 <= n <= 512.
    Carries ``min``, ``max``, ``sum`` and ``count`` of the finite values, and
    ``nonfinite``: how many were NaN or infinite (left out of the bins). Returns the
    event, or None when refused (a warning, once per name)."""
    kind = "histogram"
    if _check_name(kind, name) is None:
        return None
    try:
        if values is not None:
            if edges is not None or counts is not None:
                raise ValueError("give values, or edges and counts, not both")
            if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
                raise ValueError(f"bins must be an int from 1 to {MAX_BINS}")
            fields = histogram_fields(values, bins)
        elif edges is not None and counts is not None:
            fields = _given_histogram(edges, counts)
        else:
            raise ValueError("give values, or edges and counts")
    except Exception as e:
        warn_once(kind, name, str(e))
        return None
    return _emit(kind, name=name, step=_step(step), **fields)
