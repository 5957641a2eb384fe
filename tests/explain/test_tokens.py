"""Token-id inputs (issue 14, point 1): attributions per token through the embedding, checked on
models trained on a task whose label one trigger token sets, against Captum's layer methods
called directly, and for padding, forward keyword arguments, token strings and the report."""

from __future__ import annotations

import numpy as np
import pytest
import shap
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

import diagnose as dg
from diagnose.explain.registry import list_methods, resolve_method
from diagnose.explain.tokens import TOKEN_METHODS

TRIGGER, PAD, CLS, V, L = 3, 0, 1, 40, 12


def trigger_data(n: int, seed: int, varying: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens (ids 4..V-1) after a start token; label 1 iff the trigger token is present.
    With ``varying``, lengths vary and the rest is padding (attention mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (n, L), generator=g)
    y = torch.rand(n, generator=g) < 0.5
    lengths = torch.randint(6, L + 1, (n,), generator=g) if varying else torch.full((n,), L)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    pos = (torch.rand(n, generator=g) * (lengths - 1)).long() + 1
    ids[y, pos[y]] = TRIGGER
    ids[:, 0] = CLS
    ids[mask == 0] = PAD
    return ids, y.long(), mask


class Encoder(nn.Module):
    """Embedding, one transformer encoder layer, mean pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, 32, padding_idx=PAD)
        self.enc = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.enc(self.emb(x)).mean(1))


def train(model: nn.Module, varying: bool, masked: bool) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(300):
        ids, y, mask = trigger_data(64, step, varying)
        out = model(ids, attention_mask=mask).logits if masked else model(ids)
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    return train(Encoder(), varying=False, masked=False)


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=L, num_labels=2, pad_token_id=PAD,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return train(BertForSequenceClassification(config), varying=True, masked=True)


def top_is_trigger(exp: dg.Explanation) -> float:
    """The share of rows whose largest |attribution| is on the trigger token."""
    top = np.abs(exp.values).argmax(axis=1)
    return float((exp.data[np.arange(len(exp)), top] == TRIGGER).mean())


@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation", "input_x_gradient", "occlusion"])
def test_the_trigger_token_gets_the_top_attribution(encoder, method):
    ids, y, _ = trigger_data(400, 10_000)
    with torch.no_grad():
        assert (encoder(ids).argmax(1) == y).float().mean() > 0.97  # the model learned the task
    exp = dg.explain(encoder, ids[y == 1][:100], method, target=1, checks="none")
    assert exp.values.shape == (100, L) and top_is_trigger(exp) >= 0.9


def test_shap_permutation_over_tokens_finds_the_trigger_and_adds_up(encoder):
    ids, y, _ = trigger_data(200, 10_001)
    exp = dg.explain(encoder, ids[y == 1][:20], "shap_permutation", target=1)
    assert top_is_trigger(exp) >= 0.9
    assert exp.quality["additivity"]["passed"] and exp.quality["sampling_error"]["passed"]


def test_shap_kernel_over_tokens_matches_exact_shapley_values():
    """An additive token model (embedding to a scalar, summed): the Shapley value of a token is its
    score minus the pad token's, exactly; kernel and permutation SHAP must give that."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 1), nn.Flatten(), nn.Linear(6, 1, bias=False)).eval()
    nn.init.ones_(model[2].weight)
    ids = torch.randint(1, 20, (4, 6))
    score = model[0].weight[:, 0].detach()
    exact = (score[ids] - score[0]).numpy()
    for method in ("shap_kernel", "shap_permutation", "integrated_gradients", "feature_ablation"):
        exp = dg.explain(model, ids, method, baseline=0, checks="none")
        np.testing.assert_allclose(exp.values, exact, atol=1e-5, err_msg=method)


def test_layer_integrated_gradients_equal_captums_and_are_complete(encoder):
    ids, y, _ = trigger_data(64, 10_002)
    exp = dg.explain(encoder, ids, "integrated_gradients", target=1, n_steps=300)
    captum = LayerIntegratedGradients(encoder, encoder.emb).attribute(ids, baselines=torch.zeros_like(ids),
                                                                      target=1, n_steps=300)
    np.testing.assert_allclose(exp.values, captum.sum(-1).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert exp.quality["completeness"]["passed"], exp.quality["completeness"]
    coarse = dg.explain(encoder, ids, "integrated_gradients", target=1, n_steps=20, checks="none")
    gap = coarse.quality["completeness"]["max_relative_gap"]
    assert gap > exp.quality["completeness"]["max_relative_gap"]  # the integral converges with n_steps
    if not coarse.quality["completeness"]["passed"]:
        assert "raise n_steps" in dg.explain(encoder, ids, "integrated_gradients", target=1, n_steps=20
                                             ).quality["trust"]


def test_bert_with_attention_mask_and_padding(bert):
    ids, y, mask = trigger_data(300, 10_003, varying=True)
    with torch.no_grad():
        assert (bert(ids, attention_mask=mask).logits.argmax(1) == y).float().mean() > 0.95
    pos = y == 1
    kwargs = {"forward_kwargs": {"attention_mask": mask[pos][:60]}, "target": 1, "n_steps": 50}
    exp = dg.explain(bert, ids[pos][:60], "integrated_gradients", checks="none", **kwargs)
    assert top_is_trigger(exp) >= 0.9
    # 50 steps miss most of this trained model's path; left to itself IG integrates such rows again
    assert not exp.quality["completeness"]["passed"]
    auto = dg.explain(bert, ids[pos][:12], "integrated_gradients", checks="none", target=1,
                      forward_kwargs={"attention_mask": mask[pos][:12]})
    c = auto.quality["completeness"]
    assert c["passed"] and c["rows_refined"] > 0 and 50 < c["n_steps_max"] <= 1600, c
    padded = mask[pos][:60] == 0
    assert padded.any() and (exp.values[padded.numpy()] == 0).all() and (exp.token_mask == mask[pos][:60].numpy()).all()
    # the same rows in batches of 7: each batch keeps its rows' masks
    batched = dg.explain(bert, ids[pos][:60], "integrated_gradients", checks="none", batch_size=7, **kwargs)
    np.testing.assert_allclose(batched.values, exp.values, rtol=1e-4, atol=1e-6)
    # against Captum's LayerIntegratedGradients called directly with the same reference
    x, m = ids[pos][:8], mask[pos][:8]
    reference = torch.where(m.bool(), torch.full_like(x, PAD), x)
    captum = LayerIntegratedGradients(lambda i, a: bert(i, attention_mask=a).logits, bert.get_input_embeddings()
                                      ).attribute(x, baselines=reference, target=1, additional_forward_args=(m,))
    np.testing.assert_allclose(exp.values[:8], captum.sum(-1).detach().numpy(), rtol=1e-4, atol=1e-5)
    local = exp.local(0)
    one = dg.explain_prediction(bert, ids[pos][0], forward_kwargs={"attention_mask": mask[pos][0]}, n_steps=50)
    np.testing.assert_allclose(one.attribution_map, exp.values[0], rtol=1e-4, atol=1e-5)
    assert one.tokens == local.tokens
    assert len(local.tokens) == int(m[0].sum())
    assert set(local.contributions["position"]) == set(range(len(local.tokens)))
    perm = dg.explain(bert, ids[pos][:15], "shap_permutation", target=1,
                      forward_kwargs={"attention_mask": mask[pos][:15]})
    assert top_is_trigger(perm) >= 0.9 and perm.quality["additivity"]["passed"]
    assert (perm.values[(mask[pos][:15] == 0).numpy()] == 0).all()  # padding is not a player


def test_gpt2_model_output_is_explained_with_completeness():
    from transformers import GPT2Config, GPT2ForSequenceClassification
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16,
                                                     num_labels=3, pad_token_id=0)).eval()
    ids = torch.randint(1, 50, (5, 10))
    exp = dg.explain(model, ids, "integrated_gradients", target=2, n_steps=100)
    assert exp.values.shape == (5, 10) and exp.quality["completeness"]["passed"]
    everything = dg.explain(model, ids, "integrated_gradients", checks="none")  # 3 classes: every class
    assert everything.values.shape == (15, 10) and everything.n_rows == 5 and len(everything.tokens) == 15


class FakeTokenizer:
    """What explain reads of a transformers tokenizer: ids to strings, and the special ids."""

    all_special_ids = [PAD, CLS]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return ["[PAD]" if i == PAD else "[CLS]" if i == CLS else "TRIGGER" if i == TRIGGER else f"w{i}"
                for i in ids]


def test_token_strings_and_special_tokens(encoder):
    ids, y, _ = trigger_data(80, 10_004)
    exp = dg.explain(encoder, ids, "integrated_gradients", tokens=FakeTokenizer(), target=1, checks="none")
    assert exp.tokens[0][0] == "[CLS]" and all(len(row) == L for row in exp.tokens)
    assert (exp.values[:, 0] == 0).all()  # the start token is kept in the reference: nothing to attribute
    assert exp.global_importance().iloc[0]["feature"] == "TRIGGER"
    assert set(exp.global_importance().columns) >= {"feature", "mean_abs", "std_abs", "mean", "count", "rank"}
    vocabulary = [f"v{i}" for i in range(V)]
    assert dg.explain(encoder, ids[:2], "saliency", tokens=vocabulary, checks="none").tokens[1][0] == f"v{CLS}"
    one = dg.explain_prediction(encoder, ids[int(np.flatnonzero(y.numpy())[0])], tokens=FakeTokenizer())
    assert one.contributions.iloc[0]["feature"] == "TRIGGER" and one.target == 1
    with pytest.raises(ValueError, match="tokens: a vocabulary of 5 strings does not cover token id"):
        dg.explain(encoder, ids[:3], tokens=["a"] * 5)
    with pytest.raises(ValueError, match="tokens: expected 3 rows of 12 strings"):
        dg.explain(encoder, ids[:3], tokens=[["a"] * 12] * 2)


def test_to_shap_feeds_shaps_text_plot(bert):
    ids, _, mask = trigger_data(4, 10_005, varying=True)
    exp = dg.explain(bert, ids, "feature_ablation", forward_kwargs={"attention_mask": mask}, tokens=FakeTokenizer())
    sv = exp.to_shap()
    assert len(sv[1].values) == int(mask[1].sum())
    html = shap.plots.text(sv[1], display=False)
    assert "TRIGGER" in html or "w" in html


def test_token_errors_name_the_argument(encoder):
    ids = trigger_data(4, 1)[0]
    with pytest.raises(ValueError, match="method: deeplift does not explain token ids.*integrated_gradients"):
        dg.explain(encoder, ids, "deeplift")
    with pytest.raises(ValueError, match="background: token inputs"):
        dg.explain(encoder, ids, background=ids)
    with pytest.raises(ValueError, match=r"X: token ids must be in \[0, 39\]"):
        dg.explain(encoder, ids + 100)
    with pytest.raises(ValueError, match="baseline: reference token ids must be in"):
        dg.explain(encoder, ids, baseline=99)
    with pytest.raises(ValueError, match="forward_kwargs: attention_mask hold one entry per row"):
        dg.explain(nn.Linear(3, 2), torch.randn(4, 3), forward_kwargs={"attention_mask": torch.ones(4, 3)})
    with pytest.raises(ValueError, match="abs: saliency of token ids"):
        dg.explain(encoder, ids, "saliency", abs=False)
    assert set(TOKEN_METHODS) == {m for m in list_methods() if resolve_method(m).tokens is not None}


def test_quality_checks_that_perturb_continuously_say_why_they_are_skipped(encoder):
    exp = dg.explain(encoder, trigger_data(40, 2)[0], "integrated_gradients", target=1)
    assert "discrete" in exp.quality["infidelity"]["skipped"] and "discrete" in exp.quality["sensitivity"]["skipped"]
    assert exp.quality["randomization"]["passed"] is True  # a randomized encoder attributes differently


@pytest.mark.slow
def test_report_shows_single_predictions_as_highlighted_text(tmp_path, bert):
    ids, y, mask = trigger_data(40, 10_006, varying=True)
    run_dir = tmp_path / "run"
    optimizer = torch.optim.SGD(bert.parameters(), lr=0.0)
    with dg.watch(bert, optimizer, run_dir, every=1) as run:
        for _ in range(3):
            loss = nn.functional.cross_entropy(bert(ids, attention_mask=mask).logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
    bert.eval()
    out = dg.report(run_dir, model=bert, data=ids, labels=y, forward_kwargs={"attention_mask": mask},
                    tokens=FakeTokenizer(), out=tmp_path / "r.html", class_names=["no", "yes"])
    html = out.read_text()
    assert 'class="tokens"' in html and ">TRIGGER</span>" in html and "<script" not in html
    assert "class 1 (the positive class)" in html and "each single prediction explains its predicted class" in html
    assert "[PAD]" not in html.split('class="tokens"')[1].split("</p>")[0]  # padding is not shown
