"""ResNet-18 backbone: torchvision parameter names and shapes, weight loading, output shape."""

import pytest
import torch

from gsdf_model.backbone import ResNet, load_backbone_weights
from gsdf_model.config import get_preset
from gsdf_model.network import GSDFNet

# torchvision.models.resnet18().state_dict().keys(), written out (torchvision is not a
# dependency): 122 entries, fc last.
TORCHVISION_RESNET18_KEYS = """
conv1.weight bn1.weight bn1.bias bn1.running_mean bn1.running_var bn1.num_batches_tracked
layer1.0.conv1.weight layer1.0.bn1.weight layer1.0.bn1.bias layer1.0.bn1.running_mean
layer1.0.bn1.running_var layer1.0.bn1.num_batches_tracked layer1.0.conv2.weight
layer1.0.bn2.weight layer1.0.bn2.bias layer1.0.bn2.running_mean layer1.0.bn2.running_var
layer1.0.bn2.num_batches_tracked layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias
layer1.1.bn1.running_mean layer1.1.bn1.running_var layer1.1.bn1.num_batches_tracked
layer1.1.conv2.weight layer1.1.bn2.weight layer1.1.bn2.bias layer1.1.bn2.running_mean
layer1.1.bn2.running_var layer1.1.bn2.num_batches_tracked layer2.0.conv1.weight
layer2.0.bn1.weight layer2.0.bn1.bias layer2.0.bn1.running_mean layer2.0.bn1.running_var
layer2.0.bn1.num_batches_tracked layer2.0.conv2.weight layer2.0.bn2.weight layer2.0.bn2.bias
layer2.0.bn2.running_mean layer2.0.bn2.running_var layer2.0.bn2.num_batches_tracked
layer2.0.downsample.0.weight layer2.0.downsample.1.weight layer2.0.downsample.1.bias
layer2.0.downsample.1.running_mean layer2.0.downsample.1.running_var
layer2.0.downsample.1.num_batches_tracked layer2.1.conv1.weight layer2.1.bn1.weight
layer2.1.bn1.bias layer2.1.bn1.running_mean layer2.1.bn1.running_var
layer2.1.bn1.num_batches_tracked layer2.1.conv2.weight layer2.1.bn2.weight layer2.1.bn2.bias
layer2.1.bn2.running_mean layer2.1.bn2.running_var layer2.1.bn2.num_batches_tracked
layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias layer3.0.bn1.running_mean
layer3.0.bn1.running_var layer3.0.bn1.num_batches_tracked layer3.0.conv2.weight
layer3.0.bn2.weight layer3.0.bn2.bias layer3.0.bn2.running_mean layer3.0.bn2.running_var
layer3.0.bn2.num_batches_tracked layer3.0.downsample.0.weight layer3.0.downsample.1.weight
layer3.0.downsample.1.bias layer3.0.downsample.1.running_mean layer3.0.downsample.1.running_var
layer3.0.downsample.1.num_batches_tracked layer3.1.conv1.weight layer3.1.bn1.weight
layer3.1.bn1.bias layer3.1.bn1.running_mean layer3.1.bn1.running_var
layer3.1.bn1.num_batches_tracked layer3.1.conv2.weight layer3.1.bn2.weight layer3.1.bn2.bias
layer3.1.bn2.running_mean layer3.1.bn2.running_var layer3.1.bn2.num_batches_tracked
layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias layer4.0.bn1.running_mean
layer4.0.bn1.running_var layer4.0.bn1.num_batches_tracked layer4.0.conv2.weight
layer4.0.bn2.weight layer4.0.bn2.bias layer4.0.bn2.running_mean layer4.0.bn2.running_var
layer4.0.bn2.num_batches_tracked layer4.0.downsample.0.weight layer4.0.downsample.1.weight
layer4.0.downsample.1.bias layer4.0.downsample.1.running_mean layer4.0.downsample.1.running_var
layer4.0.downsample.1.num_batches_tracked layer4.1.conv1.weight layer4.1.bn1.weight
layer4.1.bn1.bias layer4.1.bn1.running_mean layer4.1.bn1.running_var
layer4.1.bn1.num_batches_tracked layer4.1.conv2.weight layer4.1.bn2.weight layer4.1.bn2.bias
layer4.1.bn2.running_mean layer4.1.bn2.running_var layer4.1.bn2.num_batches_tracked fc.weight
fc.bias
""".split()

CHANNELS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def torchvision_shape(key: str) -> tuple[int, ...]:
    """torchvision resnet18's tensor shape for a key, from the architecture's definition."""
    if key.endswith("num_batches_tracked"):
        return ()
    if key == "conv1.weight":
        return (64, 3, 7, 7)
    if key == "fc.weight":
        return (1000, 512)
    if key == "fc.bias":
        return (1000,)
    parts = key.split(".")
    if parts[0] == "bn1":
        return (64,)
    layer, block, name = parts[0], int(parts[1]), parts[2]
    c = CHANNELS[layer]
    c_in = c if (block > 0 or layer == "layer1") else c // 2
    if name == "conv1":
        return (c, c_in, 3, 3)
    if name == "conv2":
        return (c, c, 3, 3)
    if name == "downsample" and parts[3] == "0":
        return (c, c // 2, 1, 1)
    return (c,)  # bn1, bn2, downsample.1


def fake_torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k in TORCHVISION_RESNET18_KEYS:
        shape = torchvision_shape(k)
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g)
    return state


def test_key_list_is_complete():
    assert len(TORCHVISION_RESNET18_KEYS) == 122
    assert len(set(TORCHVISION_RESNET18_KEYS)) == 122


def test_names_and_shapes_match_torchvision():
    own = ResNet().state_dict()
    expected = {
        k: torchvision_shape(k) for k in TORCHVISION_RESNET18_KEYS if not k.startswith("fc.")
    }
    assert list(own) == list(expected)  # same names, same order
    for k, v in own.items():
        assert tuple(v.shape) == expected[k], k
    # ResNet-18 without its classifier: 11,689,512 − 513,000 parameters
    assert sum(p.numel() for p in ResNet().parameters()) == 11_176_512


def test_output_shape():
    net = ResNet(width=8, blocks=(1, 1, 1, 1))
    out = net(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 64, 8, 8)


def test_load_torchvision_file_into_every_backbone(tmp_path):
    state = fake_torchvision_state()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = GSDFNet(get_preset("tiny", backbone_width=64, backbone_blocks=(2, 2, 2, 2)))
    assert load_backbone_weights(net, path) == 2  # asymmetric: hand + shape backbones
    for bb in net.backbones.values():
        own = bb.state_dict()
        for k, v in state.items():
            if k.startswith("fc."):
                assert k not in own
            else:
                assert torch.equal(own[k], v), k


def test_load_is_strict(tmp_path):
    resnet = ResNet()
    state = fake_torchvision_state()
    missing = dict(state)
    del missing["layer3.1.bn2.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing.*layer3\.1\.bn2\.running_var"):
        load_backbone_weights(resnet, tmp_path / "missing.pth")
    extra = dict(state, **{"layer5.0.conv1.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected.*layer5"):
        load_backbone_weights(resnet, tmp_path / "extra.pth")
    torch.save(state, tmp_path / "ok.pth")
    with pytest.raises(ValueError, match="shape"):
        load_backbone_weights(ResNet(width=32), tmp_path / "ok.pth")
