"""The transformers.Trainer callback records a Hugging Face training through dg.watch."""

import pytest
import torch

import diagnose as dg

tf = pytest.importorskip("transformers")  # installed with the test extras
pytest.importorskip("accelerate")         # transformers.Trainer needs it
from diagnose.integrations.transformers import DiagnoseCallback  # noqa: E402 - only once transformers imports


class Tokens(torch.utils.data.Dataset):
    """Label 1 iff token 3 occurs: a task a tiny BERT learns in a few steps."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 100, (n, 16), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.ids[self.labels == 1, 0] = 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


@pytest.mark.slow
def test_a_transformers_trainer_run_is_recorded_and_reported(tmp_path):
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, num_labels=2))
    args = tf.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=12, per_device_train_batch_size=8,
                                logging_steps=1, eval_strategy="steps", eval_steps=6, save_strategy="no",
                                report_to=[], use_cpu=True, learning_rate=1e-3, disable_tqdm=True)
    trainer = tf.Trainer(model=model, args=args, train_dataset=Tokens(96, 0), eval_dataset=Tokens(32, 1),
                         callbacks=[DiagnoseCallback(str(tmp_path / "run"), every=2)])
    trainer.train()
    run = dg.load_run(tmp_path / "run")
    assert run.meta["complete"] is True and run.meta["source"] == "transformers" and run.meta["steps"] == 12
    scalars = run.scalars().set_index("step")
    assert scalars["loss"].notna().sum() == 12 and scalars["lr"].notna().sum() == 12
    assert scalars["val_loss"].dropna().index.tolist() == [5, 11]  # after steps 6 and 12
    stats = run.layer_stats()
    assert sorted(stats["step"].unique()) == list(range(0, 12, 2))
    assert any(name.endswith("classifier") for name in stats["layer"].unique())
    assert dg.report(tmp_path / "run", out=tmp_path / "r.html").stat().st_size > 0
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
