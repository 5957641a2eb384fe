"""Model checkpoint and data sample saved with a run, so ``report``/``explain`` work from the run
directory alone.

Files: ``model.pt`` (the state_dict), ``model.json`` (how to rebuild the architecture: the
``dg.mlp``/``dg.cnn`` call that made it), ``sample.pt`` (input and target tensors) and
``sample.json`` (feature and class names). Everything is loaded with
``torch.load(..., weights_only=True)`` and JSON: nothing from a run directory is unpickled.

Files are written to a temporary name and renamed, so a full disk never leaves a truncated file.
Loading validates before it allocates: the architecture in ``model.json`` is built on the
``meta`` device (no memory) and its shapes must equal the weights in ``model.pt``, so a hostile
``model.json`` cannot make a reader allocate more than the weights file holds.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diagnose.monitor.store import RunFileError

log = logging.getLogger(__name__)

MODEL_WEIGHTS, MODEL_SPEC, SAMPLE_DATA, SAMPLE_NAMES = "model.pt", "model.json", "sample.pt", "sample.json"
ARTIFACTS = (MODEL_WEIGHTS, MODEL_SPEC, SAMPLE_DATA, SAMPLE_NAMES)
SAMPLE_ROWS = 1000  # rows of data kept with a run: enough for global importance, small on disk
# A JSON file of names or an architecture is a few KB; anything far larger is not ours.
MAX_JSON_BYTES = 1_000_000
# dg.mlp/dg.cnn layers: far beyond any model the builders are meant for, small enough that
# building the architecture on the meta device stays instant.
MAX_BUILDER_LAYERS = 256


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(run_dir: str | Path, model: nn.Module) -> list[str]:
    """Write the model's weights and, when a ``dg`` builder made it, how to rebuild it; returns
    the names of the files written."""
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _write_atomic(run_dir / MODEL_WEIGHTS, lambda p: torch.save(state, p))
    spec = {"class": type(model).__name__, "builder": getattr(model, "diagnose_spec", None)}
    _write_atomic(run_dir / MODEL_SPEC, lambda p: p.write_text(json.dumps(spec, indent=2)))
    return [MODEL_WEIGHTS, MODEL_SPEC]


def scaler_arrays(scaler: Any) -> tuple[list[float], list[float]] | None:
    """(mean, scale) per feature of a standardisation: a scikit-learn StandardScaler (``mean_``,
    ``scale_``) or a ``(mean, scale)`` pair; None for None. Reports show raw values from it."""
    if scaler is None:
        return None
    if hasattr(scaler, "mean_") and hasattr(scaler, "scale_"):
        mean, scale = scaler.mean_, scaler.scale_
    elif isinstance(scaler, (tuple, list)) and len(scaler) == 2:
        mean, scale = scaler
    else:
        raise TypeError("feature_scaler: expected a fitted sklearn StandardScaler or a (mean, scale) pair, got "
                        f"{type(scaler).__name__}")
    mean_list = [float(v) for v in np.asarray(mean, dtype=float).reshape(-1)]
    scale_list = [float(v) for v in np.asarray(scale, dtype=float).reshape(-1)]
    if len(mean_list) != len(scale_list):
        raise ValueError(f"feature_scaler: {len(mean_list)} means but {len(scale_list)} scales")
    return mean_list, scale_list


def save_sample(run_dir: str | Path, X: Any, y: Any = None, feature_names: list[str] | None = None,
                class_names: list[str] | None = None, rows: int = SAMPLE_ROWS,
                feature_scaler: Any = None) -> list[str]:
    """Write up to ``rows`` rows of inputs (and targets) with their names (and the standardisation
    that produced them, so reports can show raw values); returns the file names."""
    run_dir = Path(run_dir)
    data = {"X": torch.as_tensor(X)[:rows].detach().cpu()}
    if y is not None:
        data["y"] = torch.as_tensor(y)[:rows].detach().cpu()
    _write_atomic(run_dir / SAMPLE_DATA, lambda p: torch.save(data, p))
    names: dict[str, Any] = {
        "feature_names": list(map(str, feature_names)) if feature_names is not None else None,
        "class_names": list(map(str, class_names)) if class_names is not None else None}
    scaled = scaler_arrays(feature_scaler)
    if scaled is not None:
        names["feature_mean"], names["feature_scale"] = scaled
    _write_atomic(run_dir / SAMPLE_NAMES, lambda p: p.write_text(json.dumps(names, indent=2)))
    return [SAMPLE_DATA, SAMPLE_NAMES]


def save_with_run(run_dir: str | Path, model: nn.Module | None, sample: Any, feature_names: Any = None,
                  class_names: Any = None, feature_scaler: Any = None) -> tuple[list[str], dict[str, str]]:
    """Save the model (if given) and the sample (inputs, or an ``(X, y)`` pair; if given) into a
    run directory. Returns the files written and, per artifact that could not be saved (a full
    disk), the error: saving costs that file, never the training. Logs a warning per failure."""
    saves: list[tuple[str, Callable[[], list[str]]]] = []
    if model is not None:
        saves.append(("model", lambda: save_model(run_dir, model)))
    if sample is not None:
        X, y = sample if isinstance(sample, (tuple, list)) else (sample, None)
        saves.append(("sample", lambda: save_sample(run_dir, X, y, feature_names, class_names,
                                                    feature_scaler=feature_scaler)))
    files: list[str] = []
    errors: dict[str, str] = {}
    for what, save in saves:
        try:
            files += save()
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
            errors[f"save_{what}"] = f"{type(err).__name__}: {err}".splitlines()[0]
            log.warning("diagnose: could not save the %s with the run in %s (%s)", what, run_dir, err)
    return files, errors


def recorded_files(meta: Mapping[str, Any]) -> list[str]:
    """The artifact files a run's metadata says it wrote (older runs: its saved_* flags)."""
    if isinstance(meta.get("files"), list):
        return [name for name in meta["files"] if name in ARTIFACTS]
    files = []
    if meta.get("saved_model"):
        files += [MODEL_WEIGHTS, MODEL_SPEC]
    if meta.get("saved_sample"):
        files += [SAMPLE_DATA, SAMPLE_NAMES]
    return files


def has_model(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MODEL_WEIGHTS).is_file()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _load_tensors(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, OSError, pickle errors...: all mean "unreadable"
        raise RunFileError(f"{path}: cannot be read as {what} (truncated or corrupt: {_first_line(err)})") from None


def _load_json(path: Path, what: str) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise RunFileError(f"{path}: {size} bytes is too large for {what} (at most {MAX_JSON_BYTES})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise RunFileError(f"{path}: cannot be read as {what} (not valid JSON: {_first_line(err)})") from None


def _builder_model(run_dir: Path, builder: Any, spec_class: str) -> nn.Module:
    """The architecture a ``model.json`` describes, built on the meta device after checking the
    builder call's arguments."""
    from diagnose import models

    path = run_dir / MODEL_SPEC
    if not isinstance(builder, dict) or builder.get("name") not in ("mlp", "cnn"):
        raise ValueError(f"run_dir: the saved model ({spec_class}) was not built with dg.mlp or dg.cnn, so it "
                         "cannot be rebuilt from the run alone; pass model= with the same architecture")
    fn = getattr(models, builder["name"])
    kwargs = builder.get("kwargs")
    allowed = set(inspect.signature(fn).parameters)
    if not isinstance(kwargs, dict) or set(kwargs) - allowed:
        raise RunFileError(f"{path}: the arguments of dg.{builder['name']} must be a mapping of "
                           f"{sorted(allowed)}, got {str(kwargs)[:200]}")
    for key, value in kwargs.items():
        if isinstance(value, list) and len(value) > MAX_BUILDER_LAYERS:
            raise RunFileError(f"{path}: {key} lists {len(value)} layers (at most {MAX_BUILDER_LAYERS})")
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            return fn(**kwargs)
    except (TypeError, ValueError) as err:
        raise RunFileError(f"{path}: dg.{builder['name']} rejects its arguments ({_first_line(err)})") from None


def load_model(run_dir: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The saved model: its weights loaded into ``model``, or into a model rebuilt with the ``dg``
    builder that made it. Raises a one-line error naming the file when neither is possible."""
    run_dir = Path(run_dir)
    if not has_model(run_dir):
        raise FileNotFoundError(f"run_dir: {run_dir} holds no saved model (record it with save_model=True)")
    spec = _load_json(run_dir / MODEL_SPEC, "a model description") if (run_dir / MODEL_SPEC).is_file() else {}
    if not isinstance(spec, dict):
        raise RunFileError(f"{run_dir / MODEL_SPEC}: expected a JSON object, got {type(spec).__name__}")
    target = (model if model is not None
              else _builder_model(run_dir, spec.get("builder"), spec.get("class", "unknown class")))
    state = _load_tensors(run_dir / MODEL_WEIGHTS, "saved weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunFileError(f"{run_dir / MODEL_WEIGHTS}: expected a state_dict (names -> tensors)")
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        shapes = [f"{k} {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}" if missing else "",
            f"unexpected {', '.join(unexpected[:4])}" if unexpected else "",
            f"shapes differ: {', '.join(shapes[:3])}" if shapes else "") if part)
        source = "the model given" if model is not None else MODEL_SPEC
        raise RunFileError(f"{run_dir / MODEL_WEIGHTS}: the weights do not match the architecture of {source} "
                           f"({details})")
    if model is None:
        target = target.to_empty(device="cpu")  # allocated now: exactly the size of the weights read
    target.load_state_dict(state)
    return target.eval()


def load_sample(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved data sample: ``X``, ``y`` (or None), ``feature_names``, ``class_names``; None if
    absent. Raises a one-line error naming the file when it cannot be read."""
    run_dir = Path(run_dir)
    path = run_dir / SAMPLE_DATA
    if not path.is_file():
        return None
    data = _load_tensors(path, "a saved data sample")
    if not isinstance(data, dict) or not isinstance(data.get("X"), torch.Tensor):
        raise RunFileError(f"{path}: expected a mapping with an 'X' tensor")
    X, y = data["X"], data.get("y")
    if y is not None and (not isinstance(y, torch.Tensor) or len(y) != len(X)):
        raise RunFileError(f"{path}: 'y' must be a tensor with one target per row of 'X' ({len(X)} rows)")
    names = _load_json(run_dir / SAMPLE_NAMES, "sample names") if (run_dir / SAMPLE_NAMES).is_file() else {}
    if not isinstance(names, dict):
        raise RunFileError(f"{run_dir / SAMPLE_NAMES}: expected a JSON object")
    for key in ("feature_names", "class_names"):
        value = names.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise RunFileError(f"{run_dir / SAMPLE_NAMES}: {key} must be a list of strings or null")
    scaler = None
    if isinstance(names.get("feature_mean"), list) and isinstance(names.get("feature_scale"), list):
        scaler = (names["feature_mean"], names["feature_scale"])
    return {"X": X, "y": y, "feature_names": names.get("feature_names"), "class_names": names.get("class_names"),
            "feature_scaler": scaler}
