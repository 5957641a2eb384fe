"""Architectures people train today, built from ``transformers`` configs at tiny sizes (random
init, no downloads), trained a few dozen steps on learnable synthetic or bundled data: healthy
runs, and the same architectures with a pathology planted.

Each builder returns (model, optimizer, batches) where ``batches(step) -> (inputs, labels)``;
``train`` runs them under dg.watch. Seeds are fixed: every run is deterministic on CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose as dg

tf = pytest.importorskip("transformers")  # in the test extras
tf.logging.set_verbosity_error()

STEPS = 60
EVERY = 2


def train(built, run_dir, steps=STEPS, every=EVERY, lr_at=None):
    """``built``'s model under dg.watch; ``lr_at`` maps a step to {param group index: lr factor}
    for that step only (a planted learning-rate glitch)."""
    model, opt, batches = built
    with dg.watch(model, opt, run_dir, every=every) as run:
        for step in range(steps):
            x, y = batches(step)
            glitch = (lr_at or {}).get(step, {})
            for i, factor in glitch.items():
                opt.param_groups[i]["lr"] *= factor
            opt.zero_grad()
            out = model(x)
            logits = out.logits if hasattr(out, "logits") else out
            loss = (out.loss if y is None else nn.functional.cross_entropy(logits, y))
            loss.backward()
            opt.step()
            for i, factor in glitch.items():
                opt.param_groups[i]["lr"] /= factor
            run.log(loss=loss)
    return Path(run_dir)


def _sampler(X, y, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def batches(step):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        return X[idx], (y[idx] if y is not None else None)
    return batches


def _images(size=32):
    """scikit-learn's digits as 1-channel 32x32 images."""
    X, y = dg.datasets.digits(images=True).train
    return nn.functional.interpolate(X, size=(size, size), mode="bilinear"), y


def _trigger_tokens(n=1024, seq=24, vocab=200, trigger=3):
    """Label 1 iff the trigger token occurs somewhere in the sequence."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    ids[y == 1, torch.randint(0, seq, (int((y == 1).sum()),), generator=g)] = trigger
    return ids, y


class _CausalLM(nn.Module):
    """A causal LM whose forward takes token ids and returns the output with its loss."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids, labels=ids)


def _sequences(n=512, seq=24, vocab=100):
    """Arithmetic progressions modulo the vocabulary: next-token prediction is learnable."""
    return torch.stack([(torch.arange(seq) * (k % 3 + 1) + k) % vocab for k in range(n)])


def _opt(model, name, lr, groups=None):
    params = groups if groups is not None else model.parameters()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


# -- healthy ----------------------------------------------------------------------------------
def bert(opt="adamw"):
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=32, num_labels=2)
    model = tf.BertForSequenceClassification(cfg)
    X, y = _trigger_tokens()
    return model, _opt(model, opt, 1e-3), _sampler(X, y)


def gpt2(opt="adamw", lr=1e-3, groups=None):
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=2, n_positions=32)
    model = _CausalLM(tf.GPT2LMHeadModel(cfg))
    return model, _opt(model, opt, lr, groups(model) if groups else None), _sampler(_sequences(), None, batch=16)


def vit(opt="adamw", act="gelu", timm_init=False):
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=32, patch_size=8, num_channels=1, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, num_labels=10, hidden_act=act)
    model = tf.ViTForImageClassification(cfg)
    if timm_init:  # as timm and torchvision initialize a ViT: zero head, zero class token
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.vit.embeddings.cls_token.zero_()
    return model, _opt(model, opt, 1e-3), _sampler(*_images())


def resnet(opt="adamw"):
    torch.manual_seed(0)
    cfg = tf.ResNetConfig(num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                          layer_type="basic", num_labels=10)
    model = tf.ResNetForImageClassification(cfg)
    return model, _opt(model, opt, 1e-3 if opt == "adamw" else 0.05), _sampler(*_images())


def mobilenet(opt="adamw"):
    torch.manual_seed(0)
    cfg = tf.MobileNetV2Config(num_channels=1, image_size=32, depth_multiplier=0.35, num_labels=10)
    model = tf.MobileNetV2ForImageClassification(cfg)
    return model, _opt(model, opt, 1e-3 if opt == "adamw" else 0.01), _sampler(*_images())


HEALTHY = {
    "bert_adamw": lambda: bert(),
    "gpt2_adamw": lambda: gpt2(),
    "vit_adamw": lambda: vit(),
    "vit_timm_init_adamw": lambda: vit(timm_init=True),
    "resnet_adamw": lambda: resnet("adamw"),
    "resnet_sgd_momentum": lambda: resnet("sgd"),
    "mobilenet_v2_adamw": lambda: mobilenet("adamw"),
    "mobilenet_v2_sgd_momentum": lambda: mobilenet("sgd"),
}


# -- pathologies ------------------------------------------------------------------------------
def gpt2_diverging():
    """GPT-2 with AdamW at a learning rate of 1.0, 1000x too high: every step moves each weight by
    ~1 (AdamW is robust: at 0.3 the loss still recovers)."""
    return gpt2(lr=1.0)


def resnet_dead_relus():
    """A ResNet whose stem batch norm shifts everything strongly negative: its ReLU never fires."""
    model, opt, batches = resnet("adamw")
    with torch.no_grad():
        model.resnet.embedder.embedder.normalization.bias.fill_(-20.0)
    return model, opt, batches


def vit_saturated_sigmoid():
    """A ViT whose MLP uses a sigmoid behind 50x-scaled weights: its outputs sit in the tails. (The
    MLP's first linear layer is found by shape: module names differ between transformers versions.)"""
    model, opt, batches = vit(act="sigmoid")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and (module.in_features, module.out_features) == (64, 128):
                module.weight.mul_(50.0)  # std 1 instead of 0.02
    return model, opt, batches


def first_of_type(model, cls):
    """The qualified name of the first module of class ``cls``."""
    return next(name for name, module in model.named_modules() if isinstance(module, cls))


def _own_group(model, name):
    """Two parameter groups: the parameters of module ``name``, then all others."""
    module = dict(model.named_modules())[name]
    own = {id(p) for p in module.parameters()}
    return [{"params": list(module.parameters())},
            {"params": [p for p in model.parameters() if id(p) not in own]}]


SPIKED_LAYER = "lm.transformer.h.1.mlp.c_fc"
SPIKE_STEP = 40


def gpt2_loss_spike():
    """GPT-2 whose one MLP layer takes a single 1000x learning-rate step at step 40 (a glitch): the
    loss spikes, then recovers."""
    return gpt2(groups=lambda model: _own_group(model, SPIKED_LAYER))


PATHOLOGIES = {
    # name: (builder, the finding's kind, the layer it must name or None, train() keyword arguments)
    "gpt2_diverging": (gpt2_diverging, "divergence", None, {}),
    "resnet_dead_relus": (resnet_dead_relus, "dead_units", "resnet.embedder.embedder.activation", {}),
    "vit_saturated_sigmoid": (vit_saturated_sigmoid, "saturation", lambda model: first_of_type(model, nn.Sigmoid), {}),
    "gpt2_loss_spike": (gpt2_loss_spike, "loss_spike", SPIKED_LAYER, {"every": 1, "lr_at": {SPIKE_STEP: {0: 1000.0}}}),
}
