"""Media in the SDK: text samples, images, histograms and watch().

The first part needs no relay (the PNG encoder read back with zlib and struct, the
conversions of arrays and tensors, binning against numpy, the refusals, watch()'s step
counting on a real tiny model); the second runs against a real relay (the bytes served
back, the stored events, a relay that refuses, a relay that is away and comes back)."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import Relay
from test_resilience import start_trainer, wait_for_file

import stepwatch
from stepwatch import _media, _png, _session, _watch
from stepwatch._emitter import training_emitter

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")


# -- helpers ------------------------------------------------------------------------------
def read_png(data: bytes) -> tuple[int, int, int, bytes]:
    """A PNG as this SDK writes it, read with zlib and struct only: every chunk's CRC
    checked, filter byte 0 on every row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + n
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0)
    c = {0: 1, 2: 3, 6: 4}[color]
    raw = zlib.decompress(chunks[1][1])
    stride = w * c
    assert len(raw) == (stride + 1) * h
    rows = [raw[y * (stride + 1) : (y + 1) * (stride + 1)] for y in range(h)]
    assert all(r[0] == 0 for r in rows), "a row without filter 0"
    return w, h, c, b"".join(r[1:] for r in rows)


class Events:
    """Records what the emitter sends while a test runs."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def __call__(self, record: dict) -> None:
        self.items.append(record)

    def named(self, event: str) -> list[dict]:
        return [e for e in self.items if e["event"] == event]


@pytest.fixture
def events():
    rec = Events()
    training_emitter.on("*", rec)
    _media._warned.clear()
    yield rec
    training_emitter.off("*", rec)
    stepwatch.unwatch()


# -- the PNG encoder ----------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (64, 33)])
def test_png_round_trips_pixel_for_pixel(channels, size):
    w, h = size
    rng = np.random.default_rng(channels * 100 + w)
    pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8).tobytes()
    png = _png.encode_png(w, h, channels, pixels)
    assert read_png(png) == (w, h, channels, pixels)
    assert _png.decode_png(png) == (w, h, channels, pixels)
    assert _png.sniff(png) == "image/png"


def test_png_without_numpy_writes_the_same_bytes(monkeypatch):
    pixels = bytes(range(256)) * 3
    with_numpy = _png.encode_png(16, 16, 3, pixels)
    monkeypatch.delitem(sys.modules, "numpy")
    assert _png.encode_png(16, 16, 3, pixels) == with_numpy
    assert read_png(with_numpy)[3] == pixels


def test_png_refuses_a_wrong_size_or_channel_count():
    with pytest.raises(ValueError):
        _png.encode_png(2, 2, 3, b"\0" * 11)
    with pytest.raises(ValueError):
        _png.encode_png(2, 2, 2, b"\0" * 8)


def test_sniff_tells_png_jpeg_webp_and_nothing_else():
    assert _png.sniff(b"\xff\xd8\xff\xe0" + b"\0" * 20) == "image/jpeg"
    assert _png.sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert _png.sniff(b"GIF89a....") is None
    assert _png.sniff(b"<svg xmlns=...>") is None


# -- arrays and tensors to pixels -----------------------------------------------------------
def encoded(image, dataformats=None):
    item = _media.pending_image(image, dataformats)
    return read_png(item.encode())


def test_numpy_layouts_and_dtypes():
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    assert encoded(hwc) == (6, 5, 3, hwc.tobytes())
    # CHW when only the first dim can be channels
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    assert encoded(chw) == (6, 5, 3, hwc.tobytes())
    gray = hwc[:, :, 0].copy()
    assert encoded(gray) == (6, 5, 1, gray.tobytes())
    assert encoded(gray[:, :, None]) == (6, 5, 1, gray.tobytes())
    rgba = rng.integers(0, 256, size=(4, 4, 4), dtype=np.uint8)
    assert encoded(rgba)[:3] == (4, 4, 4)  # (4, 4, 4): HWC for numpy
    assert encoded(rgba, "CHW")[3] == rgba.transpose(1, 2, 0).tobytes()
    floats = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], dtype=np.float32)
    assert encoded(floats)[3] == bytes([0, 128, 255, 255, 0, 0])
    ints = np.array([[-5, 0, 100, 255, 300]], dtype=np.int16)
    assert encoded(ints)[3] == bytes([0, 0, 100, 255, 255])
    bools = np.array([[True, False]])
    assert encoded(bools)[3] == bytes([255, 0])
    # a non-contiguous view
    assert encoded(hwc[::2, ::2])[3] == np.ascontiguousarray(hwc[::2, ::2]).tobytes()


def test_torch_tensors_are_chw_by_default_like_tensorboard():
    g = torch.Generator().manual_seed(0)
    chw = torch.rand(3, 4, 5, generator=g)
    want = (chw.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    assert encoded(chw) == (5, 4, 3, want.tobytes())
    # (3, 8, 3) could be both: CHW for a tensor, HWC for an array
    both = torch.randint(0, 256, (3, 8, 3), dtype=torch.uint8, generator=g)
    assert encoded(both)[:3] == (3, 8, 3)
    assert encoded(both.numpy())[:3] == (8, 3, 3)
    hwc = torch.randint(0, 256, (6, 7, 4), dtype=torch.uint8, generator=g)
    assert encoded(hwc) == (7, 6, 4, hwc.numpy().tobytes())
    half = torch.ones(1, 2, 2, dtype=torch.bfloat16)
    assert encoded(half) == (2, 2, 1, bytes([255] * 4))
    t = torch.zeros(2, 2, requires_grad=True) * 1.0
    assert encoded(t) == (2, 2, 1, bytes(4))


def test_the_training_thread_copies_the_pixels():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    item = _media.pending_image(a)
    a[:] = 255  # the loop reuses its buffer after log_image returned
    assert read_png(item.encode())[3] == bytes(48)
    t = torch.zeros(3, 2, 2)
    item = _media.pending_image(t)
    t.fill_(1.0)
    assert read_png(item.encode())[3] == bytes(12)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 2, 2)),  # two channels
        np.zeros((5, 6, 7)),  # no channel dim
        np.zeros((2, 2, 2, 3)),  # 4-D
        np.zeros((0, 4)),
        np.array([["a"]]),
        b"GIF89a",
        "image.png",
        12,
    ],
)
def test_what_is_no_image_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        _media.pending_image(bad)


def test_pil_like_images_are_duck_typed():
    class FakePil:
        def __init__(self, mode, size, data):
            self.mode, self.size, self._data = mode, size, data

        def save(self, fp, format=None):
            fp.write(_png.encode_png(*self.size, 1, b"\x07" * (self.size[0] * self.size[1])))

        def tobytes(self):
            return self._data

        def copy(self):
            return FakePil(self.mode, self.size, self._data)

    rgb = FakePil("RGB", (2, 1), bytes([1, 2, 3, 4, 5, 6]))
    assert encoded(rgb) == (2, 1, 3, bytes([1, 2, 3, 4, 5, 6]))
    palette = FakePil("P", (3, 2), b"")  # any other mode: Pillow's own PNG
    assert encoded(palette) == (3, 2, 1, b"\x07" * 6)


# -- histograms -----------------------------------------------------------------------------
def test_list_binning_matches_numpy():
    rng = np.random.default_rng(2)
    values = rng.normal(size=10_000).tolist()
    h = _media.histogram_of_list(values, 64)
    counts, _ = np.histogram(values, bins=np.asarray(h["edges"]))
    assert h["counts"] == counts.tolist()
    assert len(h["edges"]) == 65 and h["edges"][0] == min(values) and h["edges"][-1] == max(values)
    assert h["count"] == 10_000 and h["sum"] == pytest.approx(sum(values))
    assert "nonfinite" not in h


def test_nonfinite_values_are_left_out_and_counted():
    values = [1.0, float("nan"), 2.0, float("inf"), float("-inf"), 3.0]
    for h in (
        _media.histogram_of_list(values, 4),
        _media.histogram_of_array(np.array(values), 4),
        _media.histogram_of_tensor(torch.tensor(values), 4),
    ):
        assert h["nonfinite"] == 3
        assert h["count"] == 3 and sum(h["counts"]) == 3
        assert (h["min"], h["max"], h["sum"]) == (1.0, 3.0, 6.0)
    only_nan = _media.histogram_of_tensor(torch.tensor([float("nan")] * 3), 8)
    assert only_nan["count"] == 0 and only_nan["nonfinite"] == 3
    assert len(only_nan["edges"]) == len(only_nan["counts"]) + 1


def test_tensor_binning_matches_numpy_on_cpu_and_without_sync():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100_000, generator=g) * 3
    for h in (
        _media.histogram_of_tensor(x, 64),
        # the device path (no value read back until the end), run on the CPU here
        _media.summary_to_event(_media.summary_no_sync(x, 64).tolist(), 64),
    ):
        counts, _ = np.histogram(x.double().numpy(), bins=np.asarray(h["edges"]))
        assert np.abs(np.asarray(h["counts"]) - counts).sum() <= 2  # float32 edges
        assert sum(h["counts"]) == 100_000
        assert h["min"] == pytest.approx(float(x.min()))
        assert h["max"] == pytest.approx(float(x.max()))
    same = _media.histogram_of_tensor(torch.full((10,), 2.0), 4)
    assert same["edges"][0] < 2.0 < same["edges"][-1] and sum(same["counts"]) == 10
    ints = _media.histogram_of_tensor(torch.arange(10), 5)
    assert ints["counts"] == [2, 2, 2, 2, 2]


def test_log_histogram_events_and_refusals(events, caplog):
    h = stepwatch.log_histogram("w", [0, 1, 2, 3], bins=2, step=7)
    assert h["counts"] == [2, 2] and h["step"] == 7 and h["edges"] == [0.0, 1.5, 3.0]
    given = stepwatch.log_histogram("g", edges=[0, 1, 2], counts=[3, 4])
    assert given["counts"] == [3, 4] and given["edges"] == [0.0, 1.0, 2.0]
    with caplog.at_level(logging.WARNING, logger="stepwatch"):
        assert stepwatch.log_histogram("bad", edges=[0, 1], counts=[1, 2]) is None
        assert stepwatch.log_histogram("bad", edges=[0, 1], counts=[1, 2]) is None
        assert stepwatch.log_histogram("dec", edges=[1, 0], counts=[1]) is None
        assert stepwatch.log_histogram("neg", edges=[0, 1], counts=[-1]) is None
        assert stepwatch.log_histogram("bins", [1, 2], bins=513) is None
        assert stepwatch.log_histogram("x" * 129, [1.0]) is None
        assert stepwatch.log_histogram("str", "abc") is None
    assert [e["name"] for e in events.named("histogram")] == ["w", "g"]
    warned = [r.getMessage() for r in caplog.records]
    assert sum("'bad'" in m for m in warned) == 1, "warned more than once per name"
    assert len(warned) == 6


# -- text -----------------------------------------------------------------------------------
def test_log_text_shapes_and_limits(events, caplog):
    stepwatch.log_text("t", "hello", caption="c")
    stepwatch.log_text("pc", prompt="2+2=", completion="4")
    stepwatch.log_text("tab", columns=["a", "b"], rows=[[1, "x"], [2.5, None], [True, "y"]])
    stepwatch.log_text("np", columns=["v"], rows=[[np.float32(0.5)], [torch.tensor(3)]])
    with caplog.at_level(logging.WARNING, logger="stepwatch"):
        assert stepwatch.log_text("big", "x" * (64 * 1024 + 1)) is None
        assert stepwatch.log_text("uni", "é" * (32 * 1024 + 1)) is None  # bytes, not chars
        assert stepwatch.log_text("cols", columns=[f"c{i}" for i in range(33)], rows=[]) is None
        assert stepwatch.log_text("rows", columns=["a"], rows=[[i] for i in range(1001)]) is None
        assert stepwatch.log_text("short", columns=["a", "b"], rows=[[1]]) is None
        assert stepwatch.log_text("cell", columns=["a"], rows=[[{"no": 1}]]) is None
        assert stepwatch.log_text("both", "a", prompt="b") is None
        assert stepwatch.log_text("none") is None
        assert stepwatch.log_text("cap", "a", caption="c" * 1001) is None
        assert stepwatch.log_text("bad\nname", "a") is None
    sent = events.named("text_sample")
    assert [e["name"] for e in sent] == ["t", "pc", "tab", "np"]
    assert sent[0]["text"] == "hello" and sent[0]["caption"] == "c"
    assert sent[1]["prompt"] == "2+2=" and sent[1]["completion"] == "4"
    assert sent[2]["rows"] == [[1, "x"], [2.5, None], [True, "y"]]
    assert sent[3]["rows"] == [[0.5], [3]]
    assert len(caplog.records) == 10
    # exactly at the limit passes
    assert stepwatch.log_text("edge", "x" * (64 * 1024)) is not None


def test_step_defaults_to_the_sdks_global_step(events, monkeypatch):
    class Ctl:
        _step = 41

    monkeypatch.setattr(_session, "controller", Ctl())
    assert stepwatch.log_text("s", "a")["step"] == 41
    assert stepwatch.log_text("s", "a", step=3)["step"] == 3
    monkeypatch.setattr(_session, "controller", None)
    assert "step" not in stepwatch.log_text("s", "a")  # the reducer's step then


def test_not_connected_log_image_copies_nothing_and_emits_the_event(events):
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError("the image was touched")

    assert _session.sender is None
    ev = stepwatch.log_image("img", Exploding(), step=2, caption="c", index=1)
    assert ev is not None and "_media" not in ev and ev["index"] == 1


# -- watch() --------------------------------------------------------------------------------
def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def train(model, steps, zero_grad_after=True, opt=None, grads_at=None):
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for i in range(1, steps + 1):
        if not zero_grad_after:
            opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if grads_at is not None:
            grads_at[i] = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        if zero_grad_after:
            opt.zero_grad()  # set_to_none: no gradient left at batch_end
        stepwatch.emit_batch_end(batch_idx=i - 1, loss=loss.item())


@pytest.mark.parametrize("zero_grad_after", [True, False])
def test_watch_sends_gradient_histograms_at_due_steps_only(events, zero_grad_after):
    model = tiny_model()
    grads: dict[int, dict] = {}
    handle = stepwatch.watch(model, log="gradients", every=3)
    train(model, 10, zero_grad_after, grads_at=grads)
    assert _watch.wait_idle(5)
    hists = events.named("histogram")
    assert {e["step"] for e in hists} == {3, 6, 9}
    names = sorted({e["name"] for e in hists})
    assert names == sorted(f"gradients/{n}" for n, _ in model.named_parameters())
    for e in hists:
        g = grads[e["step"]][e["name"].split("/", 1)[1]]
        assert e["count"] == g.numel() == sum(e["counts"])
        assert e["min"] == pytest.approx(float(g.min()))
        assert e["max"] == pytest.approx(float(g.max()))
    # off-steps: no hooks left on the parameters
    assert not handle._hooks
    handle.remove()
    events.items.clear()
    train(model, 6)
    assert _watch.wait_idle(5) and not events.named("histogram")


def test_watch_all_bounded_and_with_an_optimizer(events):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stepwatch.watch(model, log="all", every=2, max_params=2, optimizer=opt)
    train(model, 5, opt=opt)
    assert _watch.wait_idle(5)
    hists = events.named("histogram")
    # the two largest: the weights of both layers (32 and 16 elements)
    want = {f"{k}/{n}" for k in ("gradients", "parameters") for n in ("0.weight", "2.weight")}
    assert {e["name"] for e in hists} == want
    assert sorted({e["step"] for e in hists}) == [2, 4]
    assert len(hists) == 8
    stepwatch.unwatch(model)
    assert not _watch._handles


def test_watch_without_gradients_or_a_module_does_not_break_the_loop(events, caplog):
    with caplog.at_level(logging.WARNING, logger="stepwatch"):
        h = stepwatch.watch(object(), every=1)
        frozen = tiny_model().requires_grad_(False)
        h2 = stepwatch.watch(frozen, every=1)
    stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
    h.remove()
    h2.remove()
    assert not events.named("histogram")
    assert len(caplog.records) == 2
    with pytest.raises(ValueError):
        stepwatch.watch(tiny_model(), log="weights")


# -- against a relay ------------------------------------------------------------------------
def all_events(relay: Relay, run: str, *names: str) -> list[dict]:
    query = f"&event={','.join(names)}" if names else ""
    return relay.get(f"/api/runs/{run}/events?limit=10000{query}")


def stored(relay: Relay, run: str, *names: str) -> list[dict]:
    """:func:`all_events`, or none while the run does not exist yet."""
    try:
        return all_events(relay, run, *names)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


def media_bytes(relay: Relay, run: str, sha: str) -> tuple[bytes, Any]:
    with urllib.request.urlopen(f"{relay.url}/api/runs/{run}/media/{sha}", timeout=5) as r:
        return r.read(), r.headers


@pytest.fixture
def connected(relay, tmp_path):
    """Connects to ``relay`` as a run of the test's own, with a private spool."""
    made = []

    def connect(run: str, **kw):
        s = stepwatch.connect(
            relay.url,
            run=run,
            commands=False,
            system_interval=0,
            heartbeat_interval=0,
            capture_logging=False,
            spool_dir=tmp_path / "spool",
            **kw,
        )
        made.append(s)
        return s

    _media._warned.clear()
    yield connect
    stepwatch.unwatch()
    stepwatch.disconnect(timeout=1)


def test_images_arrive_byte_for_byte_and_the_event_follows_its_bytes(relay, connected):
    s = connected("imgs")
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    ten = torch.rand(1, 20, 10, generator=torch.Generator().manual_seed(1))
    png = _png.encode_png(3, 2, 4, bytes(range(24)))
    stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
    ev = stepwatch.log_image("samples/array", arr, caption="an array")
    stepwatch.log_image("samples/tensor", ten, step=5, index=2)
    stepwatch.log_image("samples/bytes", png)
    assert "media" not in ev and "_media" in ev  # filled in by the sender, later
    assert stepwatch.flush(15)
    got = {e["name"]: e for e in all_events(relay, "imgs", "image")}
    assert sorted(got) == ["samples/array", "samples/bytes", "samples/tensor"]
    a, t, b = got["samples/array"], got["samples/tensor"], got["samples/bytes"]
    assert (a["mime"], a["width"], a["height"], a["caption"]) == ("image/png", 48, 32, "an array")
    assert a["step"] == 1  # the reducer's step: one batch_end before it
    assert (t["width"], t["height"], t["step"], t["index"]) == (10, 20, 5, 2)
    body, headers = media_bytes(relay, "imgs", a["media"])
    assert hashlib.sha256(body).hexdigest() == a["media"] == a["media"].lower()
    assert headers["Content-Type"] == "image/png" and a["size"] == len(body)
    assert read_png(body) == (48, 32, 3, arr.tobytes())
    want = (ten[0].numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    assert read_png(media_bytes(relay, "imgs", t["media"])[0]) == (10, 20, 1, want.tobytes())
    assert media_bytes(relay, "imgs", b["media"])[0] == png  # encoded bytes pass through
    # JPEG and WebP headers go as they are too (the relay reads their size)
    jpeg = b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x07\x00\x09\x01\x01\x11\x00\xff\xd9"
    bits = (13 - 1) | ((6 - 1) << 14)
    webp_body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits) + b"\0" * 8
    webp = b"RIFF" + struct.pack("<I", 4 + len(webp_body)) + b"WEBP" + webp_body
    stepwatch.log_image("samples/jpeg", jpeg)
    stepwatch.log_image("samples/webp", bytearray(webp))
    assert stepwatch.flush(15)
    more = {e["name"]: e for e in all_events(relay, "imgs", "image")}
    j, w = more["samples/jpeg"], more["samples/webp"]
    assert (j["mime"], j["width"], j["height"]) == ("image/jpeg", 9, 7)
    assert (w["mime"], w["width"], w["height"]) == ("image/webp", 13, 6)
    assert media_bytes(relay, "imgs", j["media"])[0] == jpeg
    assert media_bytes(relay, "imgs", w["media"])[0] == webp
    # the pixels are let go once sent: the emitter's history keeps no copy
    assert ev["_media"].source is None
    assert s.media_pending_bytes == 0 and not s._blobs
    state = relay.get("/api/runs/imgs")
    kinds = {(m["name"], m["kind"]) for m in state["media"]}
    assert ("samples/array", "image") in kinds


def test_text_samples_and_histograms_are_stored(relay, connected):
    connected("texts")
    stepwatch.log_text("notes", "plain text", step=1)
    stepwatch.log_text("chat", prompt="Q?", completion="A.", step=2, caption="sample")
    stepwatch.log_text("table", columns=["k", "v"], rows=[["a", 1], ["b", None]], step=3)
    stepwatch.log_histogram("list", [1, 2, 2, 3, float("nan")], bins=2, step=4)
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(2))
    stepwatch.log_histogram("tensor", x, step=5)
    stepwatch.log_histogram("given", edges=[0, 1, 2], counts=[5, 6], step=6)
    assert stepwatch.flush(15)
    texts = {e["name"]: e for e in all_events(relay, "texts", "text_sample")}
    assert texts["notes"]["text"] == "plain text"
    assert (texts["chat"]["prompt"], texts["chat"]["completion"]) == ("Q?", "A.")
    assert texts["table"]["rows"] == [["a", 1], ["b", None]]
    hists = {e["name"]: e for e in all_events(relay, "texts", "histogram")}
    assert hists["list"]["counts"] == [1, 3] and hists["list"]["nonfinite"] == 1
    assert sum(hists["tensor"]["counts"]) == 10_000 and len(hists["tensor"]["edges"]) == 65
    assert hists["given"]["counts"] == [5, 6] and hists["given"]["step"] == 6


def test_watch_sends_gradient_histograms_to_the_relay(relay, connected):
    connected("watched")
    model = tiny_model()
    stepwatch.watch(model, log="all", every=5)
    train(model, 12)
    assert stepwatch.flush(15)
    hists = all_events(relay, "watched", "histogram")
    steps = {(e["name"].split("/")[0], e["step"]) for e in hists}
    assert steps == {(k, s) for k in ("gradients", "parameters") for s in (5, 10)}
    assert len(hists) == 4 * 4  # 4 parameters, 2 kinds, 2 steps


def test_a_refused_image_is_dropped_with_the_relays_reason_and_the_rest_goes_on(tmp_path, caplog):
    relay = Relay(tmp_path / "data")
    relay.extra = ["--media-max-item", "300"]
    relay.start()
    try:
        stepwatch.connect(
            relay.url,
            run="refused",
            commands=False,
            system_interval=0,
            heartbeat_interval=0,
            capture_logging=False,
            spool_dir=tmp_path / "spool",
        )
        noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        small = np.zeros((4, 4), dtype=np.uint8)
        with caplog.at_level(logging.WARNING, logger="stepwatch"):
            for i in range(3):
                stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1))
                stepwatch.log_image("big", noise)  # ~12 KB as PNG: over the limit
                stepwatch.log_image("small", small, index=i)
                stepwatch.log_text("t", f"step {i}")
            t0 = time.perf_counter()
            assert stepwatch.flush(15)
        assert time.perf_counter() - t0 < 10
        names = [e["event"] for e in all_events(relay, "refused")]
        assert names.count("batch_end") == 3 and names.count("text_sample") == 3
        images = all_events(relay, "refused", "image")
        assert [(e["name"], e["index"]) for e in images] == [
            ("small", 0),
            ("small", 1),
            ("small", 2),
        ]
        warned = [r.getMessage() for r in caplog.records if "'big'" in r.getMessage()]
        assert warned and "413" in warned[0] and "media-max-item" in warned[0]
        sender = _session.sender
        assert sender is not None and sender.rejected == 3
        # the dashboard hears of it too: once, in the run's log
        told = [e for e in all_events(relay, "refused", "log") if "'big'" in e["message"]]
        assert len(told) == 1 and "413" in told[0]["message"]
    finally:
        stepwatch.disconnect(timeout=1)
        relay.stop()


def test_images_over_the_memory_bound_are_dropped_and_reported(relay, connected):
    s = connected("bounded", media_max_bytes=10_000)
    block = np.zeros((50, 50, 3), dtype=np.uint8)  # 7,500 bytes of pixels each
    s._wake.clear()
    kept = [stepwatch.log_image("b", block, index=i) is not None for i in range(20)]
    assert kept[0] and not all(kept), "nothing was dropped"
    assert s.dropped >= 1 and s.media_dropped == kept.count(False)
    assert stepwatch.flush(15)
    assert len(all_events(relay, "bounded", "image")) == kept.count(True)
    reports = [e for e in all_events(relay, "bounded", "log") if "dropped_media" in e]
    assert reports and reports[-1]["dropped_media"] == kept.count(False)


def test_an_image_that_fails_to_encode_is_dropped_and_told(relay, connected):
    class BadPil:  # a Pillow stand-in whose save() writes no image
        mode, size = "P", (2, 2)

        def save(self, fp, format=None):
            fp.write(b"not a png")

    s = connected("unencodable")
    assert stepwatch.log_image("bad", BadPil()) is not None  # refused on the sender thread
    stepwatch.log_image("good", np.zeros((2, 2), dtype=np.uint8))
    assert stepwatch.flush(15)
    assert [e["name"] for e in all_events(relay, "unencodable", "image")] == ["good"]
    told = [e["message"] for e in all_events(relay, "unencodable", "log")]
    assert any("'bad'" in m and "encoded" in m for m in told), told
    assert s.media_lost == 1 and s.media_pending_bytes == 0


def test_a_full_queue_dropping_an_image_lets_its_pixels_go(tmp_path):
    s = stepwatch.RelaySender(
        "http://127.0.0.1:9", "full", queue_size=3, spool_dir=tmp_path / "spool"
    )
    # the sender thread stopped: nothing is taken from the queue meanwhile
    s._stop = True
    s._stop_evt.set()
    s._wake.set()
    s._thread.join(5)
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    for i in range(3):
        item = _media.pending_image(img)
        assert s.hold_media(item.nbytes)
        s({"event": "image", "name": "i", "index": i, "_media": item})
    assert s.media_pending_bytes == 900
    s({"event": "training_end"})  # full: the oldest image makes room
    assert s.media_pending_bytes == 600 and s._queue_dropped == 1
    assert [e["index"] for e in s._queue if e["event"] == "image"] == [1, 2]


def test_tensorboard_shim_and_lightning_logger_send_media(relay, connected):
    connected("shim")
    from stepwatch.tensorboard import SummaryWriter

    w = SummaryWriter(run="shim", end_run_on_close=False)
    w.add_image("tb/chw", torch.rand(3, 8, 6), 1)
    w.add_image("tb/hwc", np.zeros((5, 7, 3), dtype=np.uint8), 2, dataformats="HWC")
    w.add_image("tb/wh", np.zeros((9, 4), dtype=np.uint8), 3, dataformats="WH")
    w.add_images("tb/batch", torch.rand(4, 1, 6, 6), 4)
    w.add_histogram("tb/hist", torch.randn(1000), 5, bins="tensorflow")
    w.add_text("tb/text", "hi", 6)
    pytest.importorskip("lightning")
    from stepwatch.integrations.lightning import StepwatchLogger

    lg = StepwatchLogger(run="shim")
    lg.log_image("pl/img", [torch.rand(3, 4, 4), np.zeros((4, 4))], step=7, caption=["a", "b"])
    lg.log_table("pl/table", columns=["x"], data=[[1], [2]], step=8)
    assert stepwatch.flush(15)
    images = all_events(relay, "shim", "image")
    dims = {(e["name"], e.get("index")): (e["width"], e["height"], e["step"]) for e in images}
    assert dims[("tb/chw", None)] == (6, 8, 1)
    assert dims[("tb/hwc", None)] == (7, 5, 2)
    assert dims[("tb/wh", None)] == (9, 4, 3)
    assert [k[1] for k in dims if k[0] == "tb/batch"] == [0, 1, 2, 3]
    assert dims[("pl/img", 1)] == (4, 4, 7)
    assert [e["caption"] for e in images if e["name"] == "pl/img"] == ["a", "b"]
    (hist,) = all_events(relay, "shim", "histogram")
    assert sum(hist["counts"]) == 1000 and len(hist["counts"]) == 64
    texts = {e["name"]: e for e in all_events(relay, "shim", "text_sample")}
    assert texts["tb/text"]["text"] == "hi" and texts["pl/table"]["rows"] == [[1], [2]]


def test_images_wait_in_the_spool_while_the_relay_is_away(tmp_path):
    relay = Relay(tmp_path / "data")  # not started yet
    spool = tmp_path / "spool"
    s = stepwatch.connect(
        relay.url,
        run="away",
        commands=False,
        system_interval=0,
        heartbeat_interval=0,
        capture_logging=False,
        spool_dir=spool,
    )
    try:
        arr = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
        for i in range(5):
            stepwatch.emit_batch_end(batch_idx=i, loss=1.0)
            stepwatch.log_image("spooled", arr + i, index=i)
        deadline = time.monotonic() + 20
        media_dir = spool / "away" / "media"
        while len(list(media_dir.glob("[0-9a-f]*"))) < 5 or s._queue:
            assert time.monotonic() < deadline, "the images never reached the spool on disk"
            time.sleep(0.05)
        assert s.media_pending_bytes == 0, "spooled images still held in memory"
        lines = [json.loads(x) for p in (spool / "away").glob("*.ndjson") for x in p.open()]
        spooled = [e for e in lines if e["event"] == "image"]
        assert len(spooled) == 5 and all(len(e["media"]) == 64 for e in spooled)
        relay.start()
        assert stepwatch.flush(30)
        images = all_events(relay, "away", "image")
        assert [e["index"] for e in images] == [0, 1, 2, 3, 4]
        for e in images:
            body = media_bytes(relay, "away", e["media"])[0]
            assert read_png(body)[3] == (arr + e["index"]).tobytes()
        stepwatch.disconnect(timeout=2)
        assert not media_dir.exists(), "image bytes left in the spool after sending"
    finally:
        stepwatch.disconnect(timeout=1)
        relay.stop()


def test_a_killed_trainers_spooled_images_are_sent_by_the_next_process(tmp_path):
    relay = Relay(tmp_path / "data")  # down while the first trainer runs
    code = f"""
import time, stepwatch, numpy as np
from pathlib import Path
s = stepwatch.connect("{relay.url}", run="crash-img")
stepwatch.emit_training_start(total_epochs=1)
for i in range(3):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0)
    stepwatch.log_image("img", np.full((8, 8), 40 * i, dtype=np.uint8), index=i)
media = Path("{tmp_path}/spool/crash-img/media")
while len(list(media.glob("[0-9a-f]*"))) < 3 or s._queue:
    time.sleep(0.02)
open("{tmp_path / "spooled"}", "w").close()
time.sleep(600)
"""
    first = start_trainer(tmp_path, code)
    try:
        wait_for_file(tmp_path / "spooled", first)
        first.kill()
        first.wait(10)
        relay.start()
        second = start_trainer(
            tmp_path,
            f"""
import stepwatch
stepwatch.connect("{relay.url}", run="crash-img")
stepwatch.emit_training_end()
assert stepwatch.flush(30), "not delivered"
""",
        )
        assert second.wait(60) == 0, second.stderr.read()
        images = all_events(relay, "crash-img", "image")
        assert [e["index"] for e in images] == [0, 1, 2]
        for e in images:
            body = media_bytes(relay, "crash-img", e["media"])[0]
            assert read_png(body) == (8, 8, 1, bytes([40 * e["index"]] * 64))
        names = [e["event"] for e in all_events(relay, "crash-img")]
        assert names[0] == "training_start" and names[-1] == "training_end"
    finally:
        first.kill()
        relay.stop()


def failing_puts(sender, times: int):
    """Makes the relay seem to answer the next ``times`` uploads with 503."""
    real = sender._media_request
    left = [times]

    def request(method, sha, body):
        if method == "PUT" and left[0] > 0:
            left[0] -= 1
            sender.last_error = "relay answered 503 to an image"
            return None
        return real(method, sha, body)

    sender._media_request = request
    return left


def test_an_upload_answered_5xx_holds_back_only_its_image(relay, connected, monkeypatch):
    monkeypatch.setattr("stepwatch._sender.MEDIA_RETRY_BACKOFF", 0.3)
    s = connected("flaky")
    failing_puts(s, 2)
    stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
    stepwatch.log_image("img", np.zeros((4, 4), dtype=np.uint8))
    stepwatch.log_text("after", "sent without waiting for the image")
    # the batch's other events are stored while the image waits for its retry
    deadline = time.monotonic() + 10
    while len(stored(relay, "flaky", "text_sample")) < 1:
        assert time.monotonic() < deadline, "the batch waited for the failing image"
        time.sleep(0.02)
    assert all_events(relay, "flaky", "image") == []
    assert stepwatch.flush(15)
    (img,) = all_events(relay, "flaky", "image")
    text = all_events(relay, "flaky", "text_sample")[0]
    assert img["seq"] > text["seq"], "retried with its old seq: the relay would skip it"
    assert img["width"] == 4


def test_an_upload_failing_every_time_is_dropped_after_its_retries(
    relay, connected, monkeypatch, caplog
):
    monkeypatch.setattr("stepwatch._sender.MEDIA_RETRY_BACKOFF", 0.02)
    s = connected("broken")
    failing_puts(s, 1000)
    with caplog.at_level(logging.WARNING, logger="stepwatch"):
        stepwatch.log_image("img", np.zeros((4, 4), dtype=np.uint8))
        stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
        assert stepwatch.flush(15)
    assert s.media_lost == 1 and s.media_pending_bytes == 0
    assert all_events(relay, "broken", "image") == []
    assert len(all_events(relay, "broken", "batch_end")) == 1
    assert any("failed its upload" in r.getMessage() for r in caplog.records)


def test_python_m_stepwatch_sync_uploads_spooled_images_first(tmp_path, run_script):
    import subprocess
    import sys

    relay = Relay(tmp_path / "data")  # down while the trainer runs
    spool = tmp_path / "spool"
    code = f"""
import numpy as np, stepwatch
stepwatch.connect("{relay.url}", run="sync-img")
stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
stepwatch.log_image("a", np.full((3, 5), 7, dtype=np.uint8))
stepwatch.log_image("b", b"GIF89a-not-sent")  # refused before sending: a warning
stepwatch.log_text("t", "after the image")
"""
    proc = run_script(code, env={"STEPWATCH_EXIT_FLUSH": "0.3"})
    assert proc.returncode == 0, proc.stderr
    assert len(list((spool / "sync-img" / "media").iterdir())) == 1
    relay.start()
    try:
        env = {"PYTHONPATH": str(Path(stepwatch.__file__).parents[1])}
        cmd = [sys.executable, "-m", "stepwatch", "sync", str(spool), "--url", relay.url]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "1 spool files sent, 0 left" in out.stdout
        names = [e["event"] for e in all_events(relay, "sync-img") if e["event"] != "log"]
        assert names == ["batch_end", "image", "text_sample"]
        # the refusal reached the run's log (capture_logging), never an exception
        logs = [e["message"] for e in all_events(relay, "sync-img", "log")]
        assert any("'b' not sent" in m for m in logs), logs
        (img,) = all_events(relay, "sync-img", "image")
        assert read_png(media_bytes(relay, "sync-img", img["media"])[0]) == (5, 3, 1, b"\x07" * 15)
        assert not (spool / "sync-img" / "media").exists()
    finally:
        relay.stop()


def test_media_read_back_through_the_api(relay, connected):
    connected("readback")
    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    stepwatch.log_image("recon", arr, step=3, caption="c")
    stepwatch.log_image("other", arr[:2], step=4)
    stepwatch.log_text("gen", prompt="Once", completion="upon", step=3)
    stepwatch.log_histogram("w", [1.0, 2.0, 3.0], bins=3, step=3)
    assert stepwatch.flush(15)
    run = stepwatch.Api(relay.url).run("readback")
    images = list(run.images("recon"))
    assert [(i["step"], i["caption"], i["width"], i["height"]) for i in images] == [(3, "c", 6, 4)]
    assert len(list(run.images())) == 2
    body = run.image_bytes(images[0])
    assert read_png(body) == (6, 4, 3, arr.tobytes())
    assert run.image_bytes(images[0]["media"]) == body
    assert [t["completion"] for t in run.text_samples("gen")] == ["upon"]
    assert [h["counts"] for h in run.histograms()] == [[1, 1, 1]]
    with pytest.raises(stepwatch.ApiError) as e:
        run.image_bytes("0" * 64)
    assert e.value.status == 404 and not isinstance(e.value, stepwatch.RunNotFound)
    assert "holds no media" in str(e.value)
