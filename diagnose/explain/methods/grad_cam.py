"""Captum's LayerGradCam on a convolution (the last Conv2d unless ``layer`` names one), upsampled
to the input's height and width and repeated over its channels: a map shaped like the input."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import (
    AdapterResult,
    MethodSpec,
    References,
    captum_forward,
    reference_outputs,
    register_method,
)


def conv_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """The layer Grad-CAM reads: the named one, or the model's last Conv2d."""
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            raise ValueError(f"layer: no module named {layer!r}; convolutions are "
                             f"{[n for n, m in modules.items() if isinstance(m, nn.Conv2d)]}")
        return modules[layer]
    convs = [m for m in modules.values() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("grad_cam needs a model with a Conv2d layer and image inputs (N, C, H, W); "
                         "use integrated_gradients or shap_deep for other models")
    return convs[-1]


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    if x.ndim != 4:
        raise ValueError(f"grad_cam needs image inputs (N, C, H, W), got shape {tuple(x.shape)}; "
                         "use integrated_gradients for other inputs")
    layer = conv_layer(ctx.model, ctx.params.get("layer"))
    cam = LayerGradCam(captum_forward(ctx), layer).attribute(x, target=targets, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    maps = cam.expand(-1, x.shape[1], -1, -1).contiguous()
    return AdapterResult(maps, reference_outputs(ctx, refs.baseline, targets))


register_method(MethodSpec("grad_cam", attribute, "captum", additive=False, gradients=True, reference="baseline",
                           summary="class activation map of the last convolution", images_only=True,
                           settings=('layer',)))
