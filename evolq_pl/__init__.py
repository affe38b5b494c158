"""evolq_pl: Evol-Q post-training quantization of vision transformers on PyTorch Lightning."""
