"""Backbone initialisation: torchvision's ImageNet ResNet-18 through torch's hub cache, checked
against the hash in its name; a clear error offline. A locally made state dict stands in for
the published file (file:// URLs): nothing is downloaded."""

import hashlib
import urllib.error

import pytest
import torch

from gsdf_model.backbone import ResNet
from gsdf_model.config import PRESETS, get_train_preset
from gsdf_model.pretrained import (
    RESNET18_IMAGENET_URL,
    WeightsError,
    fetch_imagenet,
    resolve_backbone_weights,
)


def published(tmp_path):
    """A small state dict saved under a torchvision-style name: resnet18-<sha256[:8]>.pth
    (fetching never looks inside; loading is tested in test_train)."""
    torch.manual_seed(0)
    src = tmp_path / "src.pth"
    torch.save(ResNet(width=4, blocks=(1, 1, 1, 1)).state_dict(), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    named = tmp_path / f"resnet18-{sha[:8]}.pth"
    src.rename(named)
    return named


def test_fetched_once_into_the_cache_and_hash_checked(tmp_path):
    src = published(tmp_path)
    cache = tmp_path / "hub" / "checkpoints"
    path = fetch_imagenet(src.as_uri(), cache)
    assert path == cache / src.name and path.read_bytes() == src.read_bytes()
    src.unlink()  # "offline" now: the cached copy is used
    assert fetch_imagenet(src.as_uri(), cache) == path
    path.write_bytes(path.read_bytes()[:-1] + b"x")  # a corrupted cache is refused
    with pytest.raises(WeightsError, match="does not match its published hash"):
        fetch_imagenet(src.as_uri(), cache)


def test_download_with_the_wrong_hash_is_refused_and_not_cached(tmp_path):
    src = published(tmp_path)
    wrong = src.with_name("resnet18-00000000.pth")
    src.rename(wrong)
    with pytest.raises(WeightsError, match="cannot fetch"):
        fetch_imagenet(wrong.as_uri(), tmp_path / "cache")
    assert not (tmp_path / "cache" / wrong.name).exists()


def test_offline_without_a_cached_copy_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as err:
        resolve_backbone_weights("imagenet")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg and "resnet18-f37072fd.pth" in msg
    assert "--backbone-weights none" in msg


def test_specs():
    assert resolve_backbone_weights(None) is None
    assert resolve_backbone_weights("none") is None
    with pytest.raises(WeightsError, match="no backbone weights file"):
        resolve_backbone_weights("/nonexistent/r18.pth")
    assert RESNET18_IMAGENET_URL.endswith("resnet18-f37072fd.pth")  # torchvision IMAGENET1K_V1


def test_paper_presets_start_from_imagenet():
    for name, entry in PRESETS.items():
        assert entry.train.backbone_init == ("none" if name.startswith("tiny") else "imagenet")
    assert get_train_preset("obman").backbone_init == "imagenet"
