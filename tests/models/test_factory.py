"""Float model creation: size overrides timm rejects, and float checkpoints of other sizes, in one line."""
import pytest
import torch

from evolq_pl.models.factory import CheckpointError, ModelKwargsError, create_float_model

KW = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("override, reason", [
    (dict(embed_dim=33), r"AssertionError: dim should be divisible by num_heads"),
    (dict(num_heads=0), r"ZeroDivisionError: integer modulo by zero"),
    (dict(colour=1), r"TypeError: .*unexpected keyword argument 'colour'"),
])
def test_model_kwargs_timm_rejects_are_one_line_naming_them(override, reason):
    """(issue 28, defect 6: a model_kwargs size timm rejects was a traceback)"""
    kwargs = {**KW, **override}
    with pytest.raises(ModelKwargsError, match=rf"^model_kwargs=\{{.*{next(iter(override))}.*\}}: timm cannot build "
                                               rf"deit_tiny_patch16_224.fb_in1k with them \({reason}\)$"):
        create_float_model("deit_tiny_patch16_224", **kwargs)


def test_float_checkpoint_of_other_sizes_is_one_line_naming_model_kwargs(tmp_path):
    """(issue 28, defect 6: model_kwargs {img_size: 30, patch_size: 4} on the DeiT config printed 84 lines)"""
    path = tmp_path / "float.pt"
    torch.save(create_float_model("deit_tiny_patch16_224", **KW).state_dict(), path)
    other = {**KW, "embed_dim": 48, "depth": 3}
    with pytest.raises(CheckpointError) as raised:
        create_float_model("deit_tiny_patch16_224", checkpoint_path=str(path), **other)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path} does not match the model built with "
                                                      f"model_kwargs={other}: 12 missing (blocks.2.norm1.weight, ")
    assert "; 31 of another shape, checkpoint vs model (cls_token (1, 1, 32) vs (1, 1, 48), " in message
