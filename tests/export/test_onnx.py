"""ONNX QDQ export checked with onnxruntime on the shipped reference models."""
import pytest
import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model
from evolq_pl.export import ExportError
from evolq_pl.export.onnx_io import export_onnx
from evolq_pl.lightning.fashion_mnist import FashionMNISTDataModule
from evolq_pl.report.metrics import evaluate
from evolq_pl.models.reference import reference_model

ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")


@pytest.mark.parametrize("name", ["deit_fmnist", "levit_fmnist"])
def test_onnxruntime_top1_matches_pytorch(name, tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    ref = reference_model(name)
    model = create_quant_model(ref["model_name"], QuantConfig(w_bits=4), checkpoint_path=ref["path"],
                               **ref["model_kwargs"])
    dm = FashionMNISTDataModule(image_size=ref["image_size"], batch_size=500, eval_size=2000, calib_size=200)
    calibrate(model, dm.calibration_data().batches())
    path = export_onnx(model, dm.calibration_data().images[:2], tmp_path / "m.onnx")
    assert "QuantizeLinear" in path.read_bytes().decode("latin-1")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in dm.eval_dataloader():
        logits = session.run(None, {"images": x.numpy()})[0]
        correct += int((torch.from_numpy(logits).argmax(1) == y).sum())
        total += len(y)
    onnx_top1 = 100.0 * correct / total
    torch_top1 = evaluate(model, dm.eval_dataloader(), 10)["top1"]
    assert total == 2000 and abs(onnx_top1 - torch_top1) <= 0.2


def test_onnx_refuses_uncalibrated_and_existing(tmp_path):
    model = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=1)
    with pytest.raises(ExportError, match="opset=11: per-channel DequantizeLinear needs opset 13"):
        export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "a.onnx", opset=11)
    with pytest.raises(ExportError, match="not calibrated"):
        export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "a.onnx")
    calibrate(model, [torch.randn(2, 3, 32, 32)])
    (tmp_path / "b.onnx").write_bytes(b"x")
    with pytest.raises(ExportError, match="exists"):
        export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "b.onnx")


def test_swin_exports_and_runs(tmp_path):
    from evolq_pl.export.onnx_io import onnx_session
    from tests.search.helpers import tiny_model

    model, batches = tiny_model("swin")  # shifted windows, patch merging, relative-position bias table
    path = export_onnx(model, batches[0][:2], tmp_path / "swin.onnx")
    assert "QuantizeLinear" in path.read_bytes().decode("latin-1")
    x = batches[1]
    out = torch.from_numpy(onnx_session(path).run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    # QDQ rounds x·(1/s) where PyTorch rounds x/s (module docstring): argmaxes, not bits, are compared
    assert out.shape == ref.shape and (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9


@pytest.mark.parametrize("existing", [b"old export", None])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, existing):
    from evolq_pl.io import WriteError
    from tests.search.helpers import tiny_model
    from tests.test_io import file_size_limit
    model, batches = tiny_model("deit", w_bits=4)
    target = tmp_path / "m.onnx"
    if existing is not None:
        target.write_bytes(existing)
    with file_size_limit(16384), pytest.raises(WriteError, match=f"cannot write {target}: File too large"):
        export_onnx(model, batches[0][:2], target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([target.name] if existing else [])
    assert existing is None or target.read_bytes() == existing
    assert export_onnx(model, batches[0][:2], target, overwrite=existing is not None).stat().st_size > 16384


@pytest.mark.parametrize("name", ["deit_fmnist", "levit_fmnist"])
def test_export_and_run_emit_no_tracer_or_shape_merge_warnings(name, tmp_path, capfd):
    """(issue 27) The tracer warned at every quantizer (Python branches on ``numel()``, a tensor while tracing) and
    onnxruntime on loading (a one-element 1-D per-tensor scale, ``MergeShapeInfo``); the export is unchanged."""
    import warnings

    from evolq_pl.export.onnx_io import onnx_session
    from evolq_pl.quant.quantizer import quantizers
    ref = reference_model(name)
    model = create_quant_model(ref["model_name"], QuantConfig(w_bits=4), checkpoint_path=ref["path"],
                               **ref["model_kwargs"])
    chans, size = ref["model_kwargs"].get("in_chans", 3), ref["image_size"]
    x = torch.rand(16, chans, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calibrate(model, [x])
    classes = {n: type(q) for n, q in quantizers(model).items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = onnx_session(export_onnx(model, x[:2], tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    tracer = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert tracer == [] and "MergeShapeInfo" not in capfd.readouterr().err
    assert {n: type(q) for n, q in quantizers(model).items()} == classes  # the export-time classes are put back
    with torch.no_grad():
        assert (torch.from_numpy(out).argmax(1) == model(x).argmax(1)).all()


@pytest.mark.parametrize("kind, rebuilt, signed", [("deit", False, False), ("levit", False, False),
                                                   ("swin", False, False), ("deit", True, False), ("deit", False, True)])
def test_weights_are_integer_and_recomputed_exactly(kind, rebuilt, signed, tmp_path):
    """No float tensor the size of a weight is stored; onnxruntime recomputes, from the integer codes, every
    weight the PyTorch forward multiplies by, bit for bit (each intermediate of the graph is made an output).
    Also for a model rebuilt from a safetensors export, whose float weights are stand-ins (the bias correction's
    statistics are the stored ones)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from evolq_pl.export import export_safetensors, load_safetensors
    from evolq_pl.export.onnx_io import onnx_session
    from evolq_pl.layers import QConv2d, QLinear
    from tests.search.helpers import TINY, tiny_model

    model, batches = tiny_model(kind, w_signed=signed)  # signed: int8 codes and zero points
    if rebuilt:
        name, kw, _ = TINY[kind]
        model = load_safetensors(export_safetensors(model, tmp_path / "m.safetensors", name, kw))
    with torch.no_grad():
        weights = {n: m.quantized_weight().numpy().copy() for n, m in model.named_modules()
                   if isinstance(m, (QLinear, QConv2d))}
    path = export_onnx(model, batches[0][:2], tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    stored = [numpy_helper.to_array(t) for t in proto.graph.initializer]
    stored += [numpy_helper.to_array(a.t) for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute]
    sizes = {w.size for w in weights.values()}
    assert not [t.shape for t in stored if t.dtype == np.float32 and t.size in sizes]
    assert sum(t.dtype in (np.int8, np.uint8) and t.size in sizes for t in stored) == len(weights)

    known = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=o) for n in proto.graph.node for o in n.output
                              if o and o not in known)
    proto.graph.ClearField("value_info")
    onnx.save(proto, str(tmp_path / "all.onnx"))
    outputs = onnx_session(tmp_path / "all.onnx").run(None, {"images": batches[1][:2].numpy()})
    computed = {o.tobytes() for o in outputs if isinstance(o, np.ndarray) and o.dtype == np.float32}
    missing = [n for n, w in weights.items() if w.tobytes() not in computed]
    assert not missing and len(weights) >= 6
