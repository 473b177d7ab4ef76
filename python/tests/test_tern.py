"""The Python package over tern's library: load, quantize, run, levels, save, export, compare,
inspect, errors. Run by ctest (python_package) with PYTHONPATH at the build's python directory."""
import os
import tempfile

import numpy as np
import pytest

import tern

REPO = os.environ.get("TERN_REPO", os.path.join(os.path.dirname(__file__), "..", ".."))
RESNET20 = os.path.join(REPO, "models", "resnet20.onnx")


@pytest.fixture(scope="module")
def data():
    fp32 = tern.load(RESNET20)
    x, y = tern.load_images("fashion-mnist", fp32, split="train", limit=256)
    xt, yt = tern.load_images("fashion-mnist", fp32, split="test", limit=500)
    return fp32, x, y, xt, yt


@pytest.fixture(scope="module")
def ternary(data):
    _, x, _, _, _ = data
    return tern.quantize(RESNET20, calib=x, weights="ternary", group=4, acts=8)


def test_load_runs_the_float_model_on_numpy(data):
    fp32, _, _, xt, yt = data
    assert not fp32.quantized
    scores = fp32.run(xt[:8])
    assert scores.shape == (8, 10) and scores.dtype == np.float32
    assert tern.evaluate(fp32, xt, yt)["top1"] > 85


def test_quantize_simulated_and_integer_engines_agree(data, ternary):
    _, _, _, xt, yt = data
    assert ternary.quantized
    sim = tern.evaluate(ternary, xt, yt, engine="simulated")
    integer = tern.evaluate(ternary, xt, yt, engine="integer")
    assert sim["top1"] > 85
    assert abs(sim["top1"] - integer["top1"]) <= 0.2  # 500 images: at most one differs
    info = tern.inspect(ternary)
    assert info["quantization"]["layers"][1]["weights"].startswith("ternary fgq N=4")
    assert "tern.quantize(" in info["quantization"]["provenance"]["command"]


def test_options_are_the_command_lines(data):
    _, x, _, _, _ = data
    m = tern.quantize(RESNET20, calib=[x[:128], x[128:]], weights="int4", acts=8, bias_correction=True)
    layers = tern.inspect(m)["quantization"]["layers"]
    assert any(l["weights"].startswith("int4") for l in layers)
    with pytest.raises(tern.Error, match="--weights"):
        tern.quantize(RESNET20, calib=x, weights="int9")
    with pytest.raises(tern.Error, match="frobnicate"):
        tern.quantize(RESNET20, calib=x, frobnicate=3)
    with pytest.raises(tern.Error, match="calib="):
        tern.quantize(RESNET20)
    with pytest.raises(tern.Error, match="command-line option"):
        tern.quantize(RESNET20, calib=x, data="fashion-mnist")


def test_save_load_and_export_round_trip(data, ternary):
    _, _, _, xt, _ = data
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r20.tern")
        ternary.save(path)
        again = tern.load(path)
        np.testing.assert_array_equal(again.run(xt[:16]), ternary.run(xt[:16]))
        report = ternary.export(os.path.join(tmp, "r20.onnx"))
        assert report["int8_layers"] > 20 and report["float_layers"] == 0
        exported = tern.load(os.path.join(tmp, "r20.onnx"))
        a, b = exported.run(xt[:64]), ternary.run(xt[:64])
        # The same computation, but ONNX rounds exact ties (which 8-bit pixels do meet) to even.
        assert np.abs(a - b).max() < 0.01 * np.abs(b).max()
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95


def test_residual_levels_switch(data):
    _, x, _, xt, _ = data
    m = tern.quantize(RESNET20, calib=x, weights="ternary", residual="edges:4", fallback="none")
    assert m.max_level > 0 and m.level == m.max_level
    top = m.run(xt[:32])
    m.set_level(0)
    assert m.level == 0
    base = m.run(xt[:32])
    assert not np.array_equal(top, base)
    with pytest.raises(tern.Error):
        m.set_level(m.max_level + 1)


def test_compare_reports_each_output(data, ternary):
    fp32, _, _, xt, yt = data
    (out,) = tern.compare(fp32, ternary, xt[:200], yt[:200])
    assert out["sqnr_db"] > 10 and out["top1_agreement"] > 90
    assert out["top1"] is not None and out["ref_top1"] is not None


def test_bad_input_is_a_clear_error(data):
    fp32, _, _, _, _ = data
    with pytest.raises(tern.Error, match="does not fit"):
        fp32.run(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(tern.Error, match="engine"):
        fp32.run(np.zeros((1, 1, 28, 28), np.float32), engine="gpu")
    with pytest.raises(tern.Error, match="no/such"):
        tern.load("/no/such/model.onnx")
