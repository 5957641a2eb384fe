"""Wrap an existing PyTorch training loop in dg.watch (no other change to the loop), then report.

    python examples/existing_loop.py      # writes runs/example-loop and reports/example-loop.html
"""

import torch
from torch import nn

import diagnose as dg

data = dg.datasets.digits()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data.train), batch_size=32, shuffle=True)
X_val, y_val = data.val

with dg.watch(model, optimizer, run_dir="runs/example-loop", every=10, overwrite=True,
              save_model=False) as run:
    for epoch in range(10):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()          # steps are counted here
            run.log(loss=loss)        # a tensor: no host sync
        model.eval()
        with torch.no_grad():         # evaluation passes are not recorded as training statistics
            logits = model(X_val)
        run.log(epoch=epoch, val_loss=nn.functional.cross_entropy(logits, y_val),
                val_accuracy=(logits.argmax(1) == y_val).float().mean())

run = dg.load_run("runs/example-loop")
print(run.scalars().dropna(subset=["val_loss"]).tail(3))
print(run.layer_stats().groupby("layer")[["grad_norm", "update_ratio", "act_std", "dead_frac"]].last())

# the model is not a dg builder, so pass it (and data) to the report for its explanations
print("report:", dg.report("runs/example-loop", model=model, data=X_val, labels=y_val,
                           class_names=data.class_names, out="reports/example-loop.html"))
