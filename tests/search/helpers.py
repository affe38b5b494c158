import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model
from evolq_pl.models.random_weights import randomize_

TINY = {
    "deit": ("deit_tiny_patch16_224", dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                                            depth=3, num_heads=2), 28),
    "levit": ("levit_128s", dict(img_size=64, in_chans=1, num_classes=10, embed_dim=(32, 48, 64), key_dim=8,
                                 num_heads=(2, 3, 4), depth=(1, 1, 1)), 64),
    # 14×14 tokens then 7×7 after patch merging: shifted windows in the first stage, one window in the second
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=56, in_chans=1, num_classes=10, embed_dim=16,
                                                  depths=(2, 2), num_heads=(1, 2)), 56),
}


def tiny_model(kind: str = "deit", w_bits: int = 3, seed: int = 0, n: int = 64, **quant):
    """A calibrated tiny model and its calibration batches (2 batches of n/2 seeded random images); ``quant``:
    further QuantConfig fields."""
    name, kw, size = TINY[kind]
    model = randomize_(create_quant_model(name, QuantConfig(w_bits=w_bits, **quant), **kw), seed)
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    batches = list(x.split(n // 2))
    calibrate(model, batches)
    return model, batches
