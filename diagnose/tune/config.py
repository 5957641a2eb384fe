"""``diagnose tune CONFIG.yaml``: the config file, checked like code, and the study it runs.

Every key is checked before the first trial: an unknown or misspelled key is an error naming it
and the closest valid one (``stratgy`` -> ``strategy``), a space parameter must be one the run
uses (a Trainer parameter or one of the model's), the metric one the Trainer measures. A range
has one syntax: ``{range: [low, high]}`` (uniform; integers when both ends are); a YAML list is
always categories, and a list of two numbers gets a warning saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnose.validate import did_you_mean

log = logging.getLogger(__name__)

EXAMPLE = """\
# diagnose tune config: tune a dg.mlp on a bundled dataset
dataset: digits            # digits | breast_cancer | cart_abandonment
model: {hidden: [64], dropout: 0.0}   # the model's fixed settings (hidden, dropout, batch_norm, activation)
space:                     # what to tune. A list = categories (always; [0.0, 10.0] is two values)
  hidden: [32, 64, 128]    #   {range: [low, high]}       = uniform in [low, high] (integers if both are)
  lr: {log_uniform: [0.0001, 0.1]}   # {log_uniform: [low, high]} = uniform in log space
  optimizer: [momentum, adam, adadelta]
strategy: random           # grid | random | bayes | bayes_gp | evolutionary
trials: 20                 # the study's total, shared by every worker
epochs: 8
metric: val_accuracy       # val_loss | val_accuracy
seed: 0
"""

# top-level key -> what it is (the error for an unknown key lists them)
KEYS = {
    "dataset": "the bundled dataset", "model": "the model's fixed settings", "space": "what to tune",
    "strategy": "the search strategy", "trials": "the study's number of trials", "epochs": "epochs per trial",
    "metric": "val_loss or val_accuracy", "seed": "the sampler's seed", "batch_size": "mini-batch size",
    "storage": "a storage URL shared by workers", "study": "the study name", "run_dir": "where trials record runs",
}
MODEL_KEYS = ("hidden", "dropout", "batch_norm", "activation")
DATASETS = ("digits", "breast_cancer", "cart_abandonment")
METRICS = ("val_loss", "val_accuracy")  # the bundled datasets are classification tasks


@dataclass
class TuneConfig:
    """A checked tune config."""

    path: Path
    dataset: str
    model: dict[str, Any]
    space: dict[str, Any]
    strategy: str
    trials: int
    epochs: int
    metric: str
    seed: int
    batch_size: int
    storage: str | None
    study: str | None
    run_dir: str | None


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config: {key} must be a positive integer, got {value!r}")
    return value


def parse_space(raw: Any) -> dict[str, Any]:
    """The config's ``space:`` as ``dg.tune``'s space."""
    from diagnose.tune.space import log_uniform
    from diagnose.tune.trainer import TRAINER_PARAMS
    if isinstance(raw, list):
        raise ValueError("config: space must be a mapping of parameter -> values (e.g. 'lr: {log_uniform: [0.0001, "
                         "0.1]}'), got a list; write each parameter as a key")
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"config: space must be a non-empty mapping of parameter -> values, got {raw!r}")
    known = (*TRAINER_PARAMS, *MODEL_KEYS)
    space: dict[str, Any] = {}
    for name, spec in raw.items():
        if name not in known:
            raise ValueError(f"config: space.{name} is not a parameter this run uses{did_you_mean(name, known)}; "
                             f"tunable: {', '.join(TRAINER_PARAMS)} (the Trainer), {', '.join(MODEL_KEYS)} (the model)")
        if isinstance(spec, Mapping) and set(spec) == {"log_uniform"}:
            space[name] = log_uniform(*_pair(name, spec["log_uniform"]))
        elif isinstance(spec, Mapping) and set(spec) == {"range"}:
            space[name] = tuple(_pair(name, spec["range"]))
        elif isinstance(spec, list):
            if len(spec) == 2 and all(isinstance(v, float) for v in spec):
                log.warning("config: space.%s: %s is two categories, tried as they are; for a range write "
                            "{range: %s}", name, spec, spec)
            space[name] = spec
        else:
            raise ValueError(f"config: space.{name}: expected a list of values, {{range: [low, high]}} or "
                             f"{{log_uniform: [low, high]}}, got {spec!r}")
    return space


def _pair(name: str, value: Any) -> list[float]:
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"config: space.{name}: expected [low, high], got {value!r}")
    return value


def load(path: str | Path) -> TuneConfig:
    """Read and check a tune config: every error names the key, before any trial runs."""
    import yaml

    from diagnose.tune.strategies import list_strategies
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config: {path} is not valid YAML ({err})") from err
    if not isinstance(raw, Mapping) or "space" not in raw:
        raise ValueError(f"config: {path} needs a 'space' mapping; for example:\n{EXAMPLE}")
    for key in raw:
        if key not in KEYS:
            raise ValueError(f"config: unknown key {key!r}{did_you_mean(key, KEYS)}; the keys are: "
                             + ", ".join(f"{k} ({v})" for k, v in KEYS.items()))
    model = raw.get("model") or {}
    if not isinstance(model, Mapping):
        raise ValueError(f"config: model must be a mapping of {', '.join(MODEL_KEYS)}, got {model!r}")
    for key in model:
        if key not in MODEL_KEYS:
            raise ValueError(f"config: model.{key} is not a model setting{did_you_mean(key, MODEL_KEYS)}; "
                             f"settings: {', '.join(MODEL_KEYS)}")
    dataset = raw.get("dataset", "digits")
    if dataset not in DATASETS:
        raise ValueError(f"config: dataset must be one of {list(DATASETS)}, got {dataset!r}"
                         f"{did_you_mean(dataset, DATASETS)}")
    strategy = raw.get("strategy", "random")
    if strategy not in list_strategies():
        raise ValueError(f"config: strategy must be one of {list_strategies()}, got {strategy!r}"
                         f"{did_you_mean(strategy, list_strategies())}")
    metric = raw.get("metric", "val_loss")
    if metric not in METRICS:
        raise ValueError(f"config: metric must be one of {list(METRICS)}, got {metric!r}"
                         f"{did_you_mean(metric, METRICS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"config: seed must be an integer, got {seed!r}")
    for key in ("storage", "study", "run_dir"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ValueError(f"config: {key} must be a string, got {raw[key]!r}")
    return TuneConfig(path=path, dataset=dataset, model=dict(model), space=parse_space(raw["space"]),
                      strategy=strategy, trials=_positive_int("trials", raw.get("trials", 20)),
                      epochs=_positive_int("epochs", raw.get("epochs", 10)), metric=metric, seed=seed,
                      batch_size=_positive_int("batch_size", raw.get("batch_size", 32)),
                      storage=raw.get("storage"), study=raw.get("study"), run_dir=raw.get("run_dir"))


def dataset(name: str) -> Any:
    """A bundled dataset by name."""
    from diagnose import datasets
    loaders: dict[str, Callable[[], Any]] = {"digits": datasets.digits, "breast_cancer": datasets.breast_cancer,
                                             "cart_abandonment": datasets.cart_abandonment}
    return loaders[name]()


def run(config: TuneConfig, *, storage: str | None, study: str | None, trials: int | None, run_dir: str | None,
        heartbeat: float | None) -> Any:
    """Run (or join) the config's study in this process; the TuneResult."""
    from torch import nn

    from diagnose.models import mlp
    from diagnose.tune.trainer import tune_trainer
    data = dataset(config.dataset)
    base = {"hidden": [64], "dropout": 0.0, "batch_norm": False, "activation": "relu", **config.model}

    def model_fn(params: dict[str, Any]) -> nn.Module:
        hidden = params.get("hidden", base["hidden"])
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        return mlp(data.n_features, hidden, data.n_classes, dropout=params.get("dropout", base["dropout"]),
                      batch_norm=bool(params.get("batch_norm", base["batch_norm"])),
                      activation=params.get("activation", base["activation"]))

    return tune_trainer(
        model_fn, data.train, data.val, config.space, strategy=config.strategy, n_trials=trials or config.trials,
        epochs=config.epochs, metric=config.metric,
        # workers sharing a study must not draw the same trials: each gets its own seed
        seed=config.seed + (os.getpid() if storage else 0), storage=storage, study_name=study,
        batch_size=config.batch_size, run_dir=run_dir, heartbeat=heartbeat)


def default_study(config: TuneConfig) -> str:
    """The study name: the config's, else the config file's name."""
    return config.study or config.path.stem
