"""Media in the SDK: text samples, images, histograms and watch().

The first part needs no relay (the PNG encoder read back with zlib and struct, the
conversions of arrays and tensors, binning against numpy, the refusals, watch()'s step
counting on a real tiny model); the second runs against a real relay (the bytes served
back, the stored events, a relay that refuses, a relay that is away and comes back)."""

from __future__ import annotations

import logging
import struct
import zlib

import pytest

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
