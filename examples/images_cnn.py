"""A CNN on scikit-learn's 8x8 digits, recorded with its model, then the report with Grad-CAM
and integrated-gradients maps.

    python examples/images_cnn.py         # writes runs/example-cnn and reports/example-cnn.html
"""

import shutil

import torch

import diagnose as dg

shutil.rmtree("runs/example-cnn", ignore_errors=True)
data = dg.datasets.digits(images=True)
torch.manual_seed(0)
model = dg.cnn(in_channels=1, image_size=8, num_classes=10, channels=(16, 32), batch_norm=True, dropout=0.1)
trainer = dg.Trainer(model, "adam", lr=3e-3, run_dir="runs/example-cnn", diagnostics_every=5, seed=0,
                     save_model=True, class_names=data.class_names,
                     early_stopping=dg.EarlyStopping(patience=3, restore_best_weights=True))
history = trainer.fit(data.train, data.val, epochs=15, batch_size=64)
print(history.tail(3).to_string(index=False))

cam = dg.explain(model, data.X_val[:8], "grad_cam")
print("grad_cam maps:", cam.values.shape, "layer-wise trust:", cam.quality.get("trust"))
print("report:", dg.report("runs/example-cnn", methods=["grad_cam", "integrated_gradients"],
                           out="reports/example-cnn.html"))
