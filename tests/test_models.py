"""Model builders: structure, shapes, and argument checks."""

import pytest
import torch
from torch import nn

import diagnose as dg


def test_mlp_layers_and_names():
    m = dg.mlp(10, [32, 16], 2, activation="tanh", batch_norm=True, dropout=0.1)
    assert [n for n, _ in m.named_children()] == ["fc1", "bn1", "act1", "drop1", "fc2", "bn2", "act2", "drop2", "out"]
    assert isinstance(m.act1, nn.Tanh) and isinstance(m.bn1, nn.BatchNorm1d) and m.drop1.p == 0.1
    assert m(torch.randn(4, 10)).shape == (4, 2)
    assert [n for n, _ in dg.mlp(3, [], 1).named_children()] == ["out"]


@pytest.mark.parametrize("size", [8, 28])
def test_cnn_shapes(size):
    m = dg.cnn(in_channels=1, image_size=size, num_classes=10, dropout=0.2)
    assert m(torch.randn(3, 1, size, size)).shape == (3, 10)
    assert not any(getattr(mod, "inplace", False) for mod in m.modules())


@pytest.mark.parametrize("call, match", [
    (lambda: dg.mlp(0, [4], 1), "in_features"), (lambda: dg.mlp(3, [4, 0], 1), r"hidden\[1\]"),
    (lambda: dg.mlp(3, [4], 1, activation="swishy"), "activation"), (lambda: dg.mlp(3, [4], 1, dropout=1.0), "dropout"),
    (lambda: dg.cnn(image_size=10), "image_size"), (lambda: dg.cnn(channels=()), "channels")])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
