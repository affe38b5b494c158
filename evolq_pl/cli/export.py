"""``evolq-pl export``: write a calibrated or searched model as safetensors (real low-bit weights) or ONNX (QDQ).

    evolq-pl export --config configs/fmnist/deit.yaml --ckpt_path runs/.../last.ckpt \\
        --format safetensors --output deit_w4.safetensors [--overwrite] [--model.init_args.X value …]

With ``--ckpt_path`` the searched scales are exported (the checkpoint must match the config; the config wins
and a mismatch is refused); safetensors then reads no images (ONNX still reads the calibration data, for its
two-image tracing example). Without it the model is calibrated (the FQ-ViT initialisation) and exported.
"""
from __future__ import annotations

from pathlib import Path

from evolq_pl.cli.argv import command_parser
from evolq_pl.cli.restore import build
from evolq_pl.export.safetensors_io import check_output
from evolq_pl.quant import calibrate

FORMATS = ("safetensors", "onnx")


def main(argv: list[str] | None = None) -> None:
    p, argv, extra = command_parser("export", __doc__, argv)
    p.add_argument("--ckpt_path", help="a searched checkpoint (last.ckpt of a fit run)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--output", required=True, type=Path)
    p.add_flag("--overwrite", help="replace an existing --output")
    a, extra = p.parse_command(argv, extra)
    check_output(a.output, a.overwrite, field="--output")  # before any work
    try:
        if a.format == "onnx":
            import onnx  # noqa: F401
        else:
            import safetensors  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"error: {a.format} export needs the export extra: pip install 'evolq_pl[export]' ({err})")
    module, dm = build(a.config, extra, a.ckpt_path)
    # images only where they are used: to calibrate (no checkpoint) and as ONNX's tracing example
    calib = dm.calibration_data() if a.ckpt_path is None or a.format == "onnx" else None
    if a.ckpt_path is None:
        calibrate(module.model, calib.batches())
    if a.format == "safetensors":
        from evolq_pl.export.safetensors_io import export_safetensors
        path = export_safetensors(module.model, a.output, module.model_name, module.model_kwargs, a.overwrite)
    else:
        from evolq_pl.export.onnx_io import export_onnx
        path = export_onnx(module.model, calib.images[:2], a.output, a.overwrite)
    print(f"exported {path} ({path.stat().st_size / 1024:.1f} KiB)")
