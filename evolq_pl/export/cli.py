"""``python cli.py export``: write a calibrated or searched model as safetensors (real low-bit weights)
or ONNX (QDQ).

    python cli.py export --config configs/fmnist/deit.yaml --ckpt_path runs/.../last.ckpt \
        --format safetensors --output deit_w4.safetensors [--overwrite] [-- config overrides]

Without ``--ckpt_path`` the model is calibrated (the FQ-ViT initialisation) and exported.
"""
from __future__ import annotations

from pathlib import Path

from evolq_pl.argv import command_parser
from evolq_pl.cli_build import build
from evolq_pl.export.safetensors_io import ExportError
from evolq_pl.quant import calibrate

FORMATS = ("safetensors", "onnx")


def main(argv: list[str] | None = None) -> None:
    p, argv, extra = command_parser("export", __doc__, argv)
    p.add_argument("--ckpt_path")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if Path(a.output).exists() and not a.overwrite:
        raise SystemExit(f"error: {a.output} exists; pass --overwrite to replace it")
    try:
        if a.format == "onnx":
            import onnx  # noqa: F401
        else:
            import safetensors  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"error: {a.format} export needs the export extra: pip install -e '.[export]' ({err})")
    module, dm = build(a.config, extra, a.ckpt_path)
    calib = dm.calibration_data()
    if a.ckpt_path is None:
        calibrate(module.model, calib.batches())
    try:
        if a.format == "safetensors":
            from evolq_pl.export.safetensors_io import export_safetensors
            path = export_safetensors(module.model, a.output, module.model_name, module.model_kwargs, a.overwrite)
        else:
            from evolq_pl.export.onnx_io import export_onnx
            path = export_onnx(module.model, calib.images[:2], a.output, a.overwrite)
    except ExportError as err:
        raise SystemExit(f"error: {err}")
    print(f"exported {path} ({path.stat().st_size / 1024:.1f} KiB)")
