"""Explain a trained tabular model: global importance from two methods, their agreement, one
prediction, and the quality checks.

    python examples/explain_cart.py
"""

import torch

import diagnose as dg

data = dg.datasets.cart_abandonment()
torch.manual_seed(0)
model = dg.mlp(data.n_features, [32, 16], 2, batch_norm=True, dropout=0.1)
dg.Trainer(model, "adam", lr=1e-2, seed=0, progress=False).fit(data.train, data.val, epochs=15)

exp = dg.explain(model, data.X_val, "shap_deep", background=data.X_train[:100],
                 feature_names=data.feature_names, class_names=data.class_names, target=1)
print(exp.global_importance().head(6))
print("ground truth:", data.informative)
print(exp.local(0))
print(exp.quality["trust"])

cmp = dg.compare_methods(model, data.X_val[:500], ["integrated_gradients", "shap_deep", "gradient_shap"],
                         background=data.X_train[:100], feature_names=data.feature_names, target=1)
print(cmp.agreement)
