"""Turn a reference-model training checkpoint into the shipped float weights + manifest entry.

    python -m benchmarks.export_reference --name deit_fmnist --config configs/reference/deit_fmnist.yaml \
        --ckpt runs/reference/deit_fmnist/lightning_logs/version_0/checkpoints/last.ckpt

Writes evolq_pl/reference_models/<name>.pt and updates manifest.json with its sha256 and the float
test top-1 measured here (all 10,000 test images, and the fixed first-2,000 subset the tests use).
"""
from __future__ import annotations

import argparse
import json

import torch
import yaml

from evolq_pl.cli.restore import load_checkpoint
from evolq_pl.lightning.fashion_mnist import FashionMNISTDataModule
from evolq_pl.report.metrics import evaluate
from evolq_pl.models.factory import create_float_model, sha256_file
from evolq_pl.models.reference import MANIFEST, REFERENCE_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    args = parser.parse_args()
    cfg = yaml.safe_load(open(args.config))
    init = cfg["model"]["init_args"]
    image_size = cfg["data"]["init_args"]["image_size"]
    state = load_checkpoint(args.ckpt)["float_state_dict"]  # weights-only, through Lightning's loader
    out = REFERENCE_DIR / f"{args.name}.pt"
    torch.save({k: v.clone() for k, v in state.items()}, out)
    model = create_float_model(init["model_name"], checkpoint_path=str(out), **init["model_kwargs"])
    dm = FashionMNISTDataModule(image_size=image_size, batch_size=500)
    dm.setup()
    full = evaluate(model, dm.eval_dataloader(), 10)["top1"]
    dm_sub = FashionMNISTDataModule(image_size=image_size, batch_size=500, eval_size=2000)
    dm_sub.setup()
    subset = evaluate(model, dm_sub.eval_dataloader(), 10)["top1"]
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    manifest[args.name] = {"model_name": init["model_name"], "model_kwargs": init["model_kwargs"],
                           "image_size": image_size, "file": out.name, "sha256": sha256_file(out),
                           "top1_test": round(full, 2), "top1_subset2000": round(subset, 2), "config": args.config,
                           "size_bytes": out.stat().st_size}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest[args.name], indent=2))


if __name__ == "__main__":
    main()
