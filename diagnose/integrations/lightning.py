"""PyTorch Lightning: record a ``LightningModule``'s training with ``dg.watch``.

    trainer = lightning.Trainer(callbacks=[DiagnoseCallback("runs/exp1")])

Needs the ``lightning`` extra (``pip install diagnose[lightning]``).
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("diagnose.integrations.lightning needs lightning: pip install 'diagnose[lightning]'") from err

import torch

from diagnose.monitor.watch import DEFAULT_EVERY, Watch, watch


class DiagnoseCallback(pl.Callback):
    """Watches the module and its first optimizer for the whole fit; logs the training loss every
    step and Lightning's logged metrics (``val_loss``, ...) at the end of each epoch.

    Args:
        run_dir: where to write the run.
        every: the watch's cadence for its costlier statistics.
        watch_kwargs: more ``dg.watch`` arguments (``flush_every``, ``overwrite``, ...).
    """

    def __init__(self, run_dir: str, every: int = DEFAULT_EVERY, **watch_kwargs: Any) -> None:
        self.run_dir = run_dir
        self.every = every
        self.watch_kwargs = watch_kwargs
        self.run: Watch | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # unwrap a LightningOptimizer
        self.run = watch(pl_module, optimizer, self.run_dir, every=self.every,
                         meta={"source": "lightning", "max_epochs": trainer.max_epochs}, **self.watch_kwargs)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.run is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.run.log(loss=loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run is None:
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items()
                   if isinstance(v, (torch.Tensor, float, int)) and (not isinstance(v, torch.Tensor) or v.numel() == 1)}
        self.run.log(None, epoch=trainer.current_epoch, **metrics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(complete=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close(complete=False)

    def _close(self, complete: bool) -> None:
        if self.run is not None:
            self.run.close(complete=complete)
            self.run = None
