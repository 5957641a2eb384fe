"""The one Registry type behind optimizers, losses, statistics, finding rules, explain methods and
tuning strategies, and the dg.list_...() functions read from it."""

import subprocess
import sys

import pytest

import diagnose as dg
from diagnose.registry import Registry


def test_entries_keep_their_order_and_names_are_unique():
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2)
    reg.register("a")(1)
    assert reg.names() == ["b", "a"] and reg.get("a") == 1 and reg["b"] == 2 and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 3)
    with pytest.raises(ValueError, match=r"widget: unknown name 'c'; expected one of \['b', 'a'\]"):
        reg.get("c")


def test_a_registry_is_filled_on_first_use():
    # the explain methods register when first listed: importing diagnose.explain loads no Captum
    code = ("import sys; from diagnose.explain import list_methods; before = 'captum' in sys.modules; "
            "names = list_methods(); print(before, 'captum' in sys.modules, len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "12"]


@pytest.mark.parametrize("lister, expected", [
    ("list_optimizers", {"gd", "sgd", "minibatch_sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"}),
    ("list_losses", {"cross_entropy", "nll", "bce", "mse", "l1", "huber"}),
    ("list_statistics", {"grad_norm", "weight_norm", "update_ratio", "activation_moments", "zero_fraction",
                         "dead_units", "saturation", "effective_lr"}),
    ("list_finding_rules", {"vanishing_gradient", "exploding_gradient", "dead_units", "saturation", "nonfinite",
                            "divergence", "overfitting", "stalled_learning_rate", "loss_plateau", "loss_spike",
                            "no_steps"}),
    ("list_strategies", {"grid", "random", "bayes", "bayes_gp", "evolutionary"}),
    ("list_explain_methods", {"integrated_gradients", "deeplift", "gradient_shap", "saliency", "input_x_gradient",
                              "occlusion", "feature_ablation", "grad_cam", "shap_deep", "shap_gradient",
                              "shap_kernel", "shap_permutation"}),
])
def test_every_registry_is_listed(lister, expected):
    assert set(getattr(dg, lister)()) == expected


def test_what_a_method_refuses_is_a_field_of_its_entry():
    from torch import nn

    from diagnose.explain.registry import METHODS
    refusing = {name for name, spec in METHODS.items() if spec.unsupported is not None}
    assert refusing == {"deeplift", "shap_deep"}
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    assert METHODS.get("shap_deep").refuses(model) == ["1 (LayerNorm)"]
    assert METHODS.get("integrated_gradients").refuses(model) == []
