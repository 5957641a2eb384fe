"""The Lightning callback records a LightningModule's fit through dg.watch."""

import pytest
import torch
from torch import nn

import diagnose as dg

pl = pytest.importorskip("lightning.pytorch")  # installed with the test extras
from diagnose.integrations.lightning import DiagnoseCallback  # noqa: E402 - only once lightning is known to import


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = dg.mlp(6, [8], 2)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_lightning_fit_is_recorded(tmp_path):
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.randint(0, 2, (64,)))
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    module = Module()
    trainer = pl.Trainer(max_epochs=2, callbacks=[DiagnoseCallback(str(tmp_path / "run"), every=2)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path))
    trainer.fit(module, loader, loader)
    run = dg.load_run(tmp_path / "run")
    assert run.meta["complete"] is True and run.meta["source"] == "lightning"
    scalars = run.scalars()
    assert scalars["loss"].notna().sum() == 8  # 2 epochs x 4 batches, one optimizer step each
    assert scalars["val_loss"].notna().sum() == 2 and scalars["epoch"].dropna().tolist() == [0, 1]
    stats = run.layer_stats()
    assert sorted(stats["step"].unique()) == [0, 2, 4, 6]
    assert {"net.fc1", "net.act1", "net.out"} <= set(stats["layer"])
    for m in module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
