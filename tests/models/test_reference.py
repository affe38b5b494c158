"""``checkpoint_path: reference:<name>`` names a shipped reference model's weights wherever the package lies;
a local checkpoint replaces hub weights asked for by ``pretrained``."""
import hashlib
from pathlib import Path

import pytest
import torch

from evolq_pl.models import create_float_model
from evolq_pl.models.factory import float_source
from evolq_pl.models.reference import REFERENCE_DIR, reference_model, weights_file


def test_reference_name_is_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not relative to the working folder
    assert weights_file("reference:levit_fmnist") == REFERENCE_DIR / "levit_fmnist.pt"
    assert weights_file(tmp_path / "w.pt") == tmp_path / "w.pt"
    with pytest.raises(ValueError, match=r"checkpoint_path='reference:levit': unknown reference model; shipped: "
                                         r"reference:deit_fmnist, reference:levit_fmnist"):
        weights_file("reference:levit")


def test_reference_name_loads_the_same_weights_and_source():
    ref = reference_model("deit_fmnist")
    by_name = create_float_model(ref["model_name"], checkpoint_path="reference:deit_fmnist",
                                 checkpoint_sha256=ref["sha256"], **ref["model_kwargs"])
    by_path = create_float_model(ref["model_name"], checkpoint_path=ref["path"], **ref["model_kwargs"])
    for (k, a), (_, b) in zip(by_name.state_dict().items(), by_path.state_dict().items()):
        assert torch.equal(a, b), k
    # the lean checkpoints' identity is the file's content, however it was named (hashed here, not the manifest's)
    content = {"checkpoint_sha256": hashlib.sha256(Path(ref["path"]).read_bytes()).hexdigest()}
    assert float_source(ref["model_name"], checkpoint_path="reference:deit_fmnist") == \
        float_source(ref["model_name"], checkpoint_path=ref["path"]) == content


def test_checkpoint_path_replaces_pretrained(monkeypatch):
    """A config asking for hub weights plus a local file of them: the file is loaded, nothing is downloaded."""
    import timm
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: calls.append(kw["pretrained"]) or real(*a, **kw))
    ref = reference_model("deit_fmnist")
    create_float_model(ref["model_name"], pretrained=True, checkpoint_path="reference:deit_fmnist",
                       **ref["model_kwargs"])
    assert calls == [False]
    content = hashlib.sha256(Path(ref["path"]).read_bytes()).hexdigest()
    assert float_source(ref["model_name"], True, "reference:deit_fmnist") == {"checkpoint_sha256": content}
