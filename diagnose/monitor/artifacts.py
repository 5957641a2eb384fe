"""Model checkpoint and data sample saved with a run, so ``report``/``explain`` work from the run
directory alone.

Files: ``model.pt`` (the state_dict), ``model.json`` (how to rebuild the architecture: the
``dg.mlp``/``dg.cnn`` call that made it), ``sample.pt`` (input and target tensors) and
``sample.json`` (feature and class names). Everything is loaded with
``torch.load(..., weights_only=True)`` and JSON: nothing from a run directory is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_WEIGHTS, MODEL_SPEC, SAMPLE_DATA, SAMPLE_NAMES = "model.pt", "model.json", "sample.pt", "sample.json"
SAMPLE_ROWS = 1000  # rows of data kept with a run: enough for global importance, small on disk


def save_model(run_dir: str | Path, model: nn.Module) -> Path:
    """Write the model's weights and, when a ``dg`` builder made it, how to rebuild it."""
    run_dir = Path(run_dir)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, run_dir / MODEL_WEIGHTS)
    spec = {"class": type(model).__name__, "builder": getattr(model, "diagnose_spec", None)}
    (run_dir / MODEL_SPEC).write_text(json.dumps(spec, indent=2))
    return run_dir / MODEL_WEIGHTS


def save_sample(run_dir: str | Path, X: Any, y: Any = None, feature_names: list[str] | None = None,
                class_names: list[str] | None = None, rows: int = SAMPLE_ROWS) -> Path:
    """Write up to ``rows`` rows of inputs (and targets) with their names."""
    run_dir = Path(run_dir)
    X = torch.as_tensor(X)[:rows].detach().cpu()
    data = {"X": X}
    if y is not None:
        data["y"] = torch.as_tensor(y)[:rows].detach().cpu()
    torch.save(data, run_dir / SAMPLE_DATA)
    names = {"feature_names": list(map(str, feature_names)) if feature_names is not None else None,
             "class_names": list(map(str, class_names)) if class_names is not None else None}
    (run_dir / SAMPLE_NAMES).write_text(json.dumps(names, indent=2))
    return run_dir / SAMPLE_DATA


def has_model(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MODEL_WEIGHTS).is_file()


def load_model(run_dir: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The saved model: its weights loaded into ``model``, or into a model rebuilt with the ``dg``
    builder that made it. Raises a clear error when neither is possible."""
    from diagnose import models

    run_dir = Path(run_dir)
    if not has_model(run_dir):
        raise FileNotFoundError(f"run_dir: {run_dir} holds no saved model (record it with save_model=True)")
    spec = json.loads((run_dir / MODEL_SPEC).read_text()) if (run_dir / MODEL_SPEC).is_file() else {}
    if model is None:
        builder = spec.get("builder")
        if not builder or builder.get("name") not in ("mlp", "cnn"):
            raise ValueError(f"run_dir: the saved model ({spec.get('class', 'unknown class')}) was not built with "
                             "dg.mlp or dg.cnn, so it cannot be rebuilt from the run alone; pass model= with the "
                             "same architecture")
        model = getattr(models, builder["name"])(**builder["kwargs"])
    state = torch.load(run_dir / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def load_sample(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved data sample: ``X``, ``y`` (or None), ``feature_names``, ``class_names``; None if absent."""
    run_dir = Path(run_dir)
    if not (run_dir / SAMPLE_DATA).is_file():
        return None
    data = torch.load(run_dir / SAMPLE_DATA, map_location="cpu", weights_only=True)
    names = json.loads((run_dir / SAMPLE_NAMES).read_text()) if (run_dir / SAMPLE_NAMES).is_file() else {}
    return {"X": data["X"], "y": data.get("y"), "feature_names": names.get("feature_names"),
            "class_names": names.get("class_names")}
