"""Preflight: the checks an experienced practitioner runs on a new model before a long training
(Karpathy, "A Recipe for Training Neural Networks", 2019; Smith, 2017, for the learning-rate range
test), in seconds, as findings with evidence and remedies.

Every check runs on copies: the model, the optimizer (with its state) and the torch, NumPy and
Python random states are bitwise as they were afterwards.

1. loss at initialisation against its expected value (log C for cross-entropy, the targets' mean
   square for MSE) and outputs that are already probabilities (a softmax before a loss that
   applies its own);
2. input dependence: outputs that do not change when the inputs are zeroed or permuted;
3. batch independence: changing one example must not change another's output in eval mode; the
   first module whose output does is named;
4. gradient coverage at step 0: every trainable parameter gets a finite gradient;
5. overfitting one small batch within a bounded number of steps;
6. data: NaN/Inf, constant and unscaled features, labels out of range, class imbalance, rows shared
   between training and validation data, and labels the model learns nothing from (shuffled);
7. the learning-rate range test, with a suggested rate and the curve.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diagnose import validate
from diagnose.findings.base import SEVERITY_ORDER, Finding

PREFLIGHT_FILE = "preflight.json"
# Rows of the data the checks read (the data checks read all of a tensor pair up to this many).
SAMPLE_ROWS = 4096
# Overfitting one batch: its size, the step budget, and "near zero": the loss falls below this
# share of where it started (cross-entropy from log C ~ 2.3 to ~0.1).
OVERFIT_ROWS, OVERFIT_STEPS, OVERFIT_SHARE = 16, 500, 0.05
# Label signal: steps of training on a training split, and the improvement over the best
# constant prediction the held-out loss must show.
SIGNAL_STEPS, SIGNAL_IMPROVEMENT = 150, 0.05
# Cross-entropy at initialisation above this multiple of log C: logits far from small.
INIT_LOSS_FACTOR = 1.5
# Outputs that move less than this share of their size when the input is zeroed or permuted.
INPUT_DEPENDENCE = 1e-4
# A feature is unscaled when its standard deviation is this far from 1 (either way) or its mean
# this many standard deviations from 0; a class is rare below this share of an even split.
UNSCALED_STD, UNSCALED_MEAN, RARE_CLASS = 10.0, 5.0, 0.2
# Learning-rate range test: rates (up to 10 times the configured one when that is higher), steps,
# and the smoothed loss multiple that ends it.
LR_MIN, LR_MAX, LR_STEPS, LR_DIVERGE = 1e-7, 10.0, 100, 4.0


class Preflight(list):
    """The findings of ``dg.preflight`` (a list, most severe first), with what every check saw in
    ``checks`` (check name -> evidence), the learning-rate curve in ``lr_curve`` and ``seconds``."""

    def __init__(self, findings: list[Finding], checks: dict[str, Any], seconds: float) -> None:
        super().__init__(sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity]))
        self.checks = checks
        self.seconds = seconds

    @property
    def lr_curve(self) -> dict[str, Any] | None:
        return self.checks.get("lr_range")

    def to_json(self) -> dict[str, Any]:
        return {"findings": [{"kind": f.kind, "severity": f.severity, "layer": f.layer, "evidence": f.evidence,
                              "message": f.message, "remedy": f.remedy} for f in self],
                "checks": self.checks, "seconds": self.seconds}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Preflight:
        findings = [Finding(f["kind"], f["severity"], f.get("layer"), None, f.get("evidence", {}), f["message"],
                            f["remedy"]) for f in raw.get("findings", [])]
        return cls(findings, raw.get("checks", {}), float(raw.get("seconds", 0.0)))


def load(run_dir: str | Path) -> Preflight | None:
    """The preflight saved in a run directory (``dg.preflight(..., run_dir=)``), or None."""
    path = Path(run_dir) / PREFLIGHT_FILE
    if not path.is_file():
        return None
    try:
        return Preflight.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def _kept_random_state() -> Iterator[None]:
    """torch's (CPU and CUDA), NumPy's and Python's generators restored after the checks."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class _Setup:
    """The copies the checks train, the sampled data, and the loss."""

    def __init__(self, model: nn.Module, optimizer: Any, loss: Any, lr: float | None) -> None:
        from diagnose.trainer.losses import resolve_loss
        from diagnose.trainer.optimizers import build_optimizer, resolve_optimizer
        self.loss_fn, self.loss_spec = resolve_loss(loss)
        self.loss_name = str(loss) if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        self.model = model
        self._n_outputs: int | None = None
        self.given: torch.optim.Optimizer | None = None
        self.make: Callable[[nn.Module], torch.optim.Optimizer] | None = None
        if optimizer is None or isinstance(optimizer, str):
            spec = resolve_optimizer(optimizer or "adam")
            self.optimizer_name = spec.cls.__name__
            self.make = lambda m: build_optimizer(spec, [p for p in m.parameters() if p.requires_grad], lr=lr)
        elif isinstance(optimizer, torch.optim.Optimizer):
            owned = {id(p) for p in model.parameters()}
            if any(id(p) not in owned for group in optimizer.param_groups for p in group["params"]):
                raise ValueError("optimizer: it holds parameters that are not the model's; build it over "
                                 "model.parameters()")
            self.optimizer_name = type(optimizer).__name__
            self.given = optimizer
        else:
            raise TypeError(f"optimizer: expected None, an optimizer name or a torch.optim.Optimizer over the model's "
                            f"parameters, got {type(optimizer).__name__}")

    @cached_property
    def evaluated(self) -> nn.Module:
        """One eval-mode copy shared by the checks that only run forward passes under no_grad
        (nothing in it changes: no batch statistics, their hooks removed after)."""
        return copy.deepcopy(self.model).eval()

    def n_outputs(self, X: torch.Tensor) -> int:
        """The model's output width, from one forward pass on two rows (computed once)."""
        if self._n_outputs is None:
            with torch.no_grad():
                self._n_outputs = int(_outputs(self.evaluated, X[:2]).reshape(min(2, len(X)), -1).shape[1])
        return self._n_outputs

    def copies(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A deep copy of the model and an optimizer over the copy (the given one's state copied)."""
        if self.given is not None:
            model, optimizer = copy.deepcopy((self.model, self.given))  # one memo: the copy's params
            return model, optimizer
        model = copy.deepcopy(self.model)
        assert self.make is not None
        return model, self.make(model)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from diagnose.explain.context import select_output
    return select_output(model(x), None)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _sample(data: Any, name: str, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``rows`` (X, y) rows of ``data`` (a pair, a Dataset or a DataLoader), in memory."""
    from diagnose.trainer.data import check_pair, make_batches, split_batch
    if isinstance(data, (tuple, list)):
        X, y = check_pair(data, name)
        if len(X) > rows:  # a random subset: data sorted by label must not look like one class
            pick = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))[:rows].sort().values
            return X[pick], y[pick]
        return X, y
    xs, ys, n = [], [], 0
    for batch in make_batches(data, name, 256, shuffle=False):
        x, y = split_batch(batch, name)
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
        n += len(xs[-1])
        if n >= rows:
            break
    if not xs:
        raise ValueError(f"{name}: holds no batches")
    return torch.cat(xs)[:rows], torch.cat(ys)[:rows]


def preflight(model: nn.Module, data: Any, loss: Any = "cross_entropy", optimizer: Any = None,
              lr_range: bool = True, *, val_data: Any = None, lr: float | None = None, batch_size: int = 32,
              run_dir: str | Path | None = None, seed: int = 0) -> Preflight:
    """Check a model and its data before training; returns findings (kind ``preflight_*``).

    Args:
        model: the untrained model (left exactly as it is).
        data: training data: an ``(X, y)`` pair, a Dataset or a DataLoader (up to 4096 rows read).
        loss: a loss name (``dg.list_losses()``) or a callable ``(outputs, targets) -> scalar``.
        optimizer: None (Adam), an optimizer name, or your ``torch.optim`` optimizer over
            ``model`` (copied with its state; yours is not stepped).
        lr_range: run the learning-rate range test.
        val_data: validation data, to look for rows shared with the training data.
        lr: the learning rate for a named optimizer (default: its own).
        batch_size: rows per step for the checks that train.
        run_dir: write the result there (``preflight.json``) so the run's report shows it first.
        seed: seeds the checks' batches and copies (your random state is restored).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    validate.positive_int("batch_size", batch_size)
    start = time.perf_counter()
    setup = _Setup(model, optimizer, loss, lr)
    findings: list[Finding] = []
    checks: dict[str, Any] = {}
    with _kept_random_state():
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        X, y = _sample(data, "data", SAMPLE_ROWS)
        device = _device(model)
        X, y = X.to(device), y.to(device)
        val = None if val_data is None else _sample(val_data, "val_data", SAMPLE_ROWS)
        findings += _check_data(X, y, val, setup, checks)
        if any(f.severity == "critical" and f.evidence.get("check") in ("nonfinite", "labels") for f in findings):
            return _finish(findings, checks, start, run_dir)  # the training checks would only echo them
        order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed)).to(device)
        X, y = X[order], y[order]
        for check in (_check_init_loss, _check_input_dependence, _check_batch_mixing, _check_gradients,
                      _check_overfit, _check_label_signal):
            findings += check(X, y, setup, checks, batch_size)
        if lr_range:
            findings += _check_lr_range(X, y, setup, checks, batch_size)
    return _finish(findings, checks, start, run_dir)


def _finish(findings: list[Finding], checks: dict[str, Any], start: float, run_dir: str | Path | None) -> Preflight:
    result = Preflight(findings, checks, time.perf_counter() - start)
    if run_dir is not None:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (PREFLIGHT_FILE + ".tmp")
        tmp.write_text(json.dumps(result.to_json(), indent=1, default=_jsonable))
        tmp.replace(path / PREFLIGHT_FILE)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _finding(kind: str, severity: str, message: str, remedy: str, layer: str | None = None,
             **evidence: Any) -> Finding:
    return Finding(f"preflight_{kind}", severity, layer, None, evidence, message, remedy)  # type: ignore[arg-type]


def _classification(setup: _Setup, y: torch.Tensor) -> bool:
    if setup.loss_spec is not None:
        return setup.loss_spec.classification
    return not y.is_floating_point()


def _loss(setup: _Setup, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if setup.loss_spec is not None and setup.loss_spec.binary:
        return setup.loss_fn(out.reshape(y.shape).float() if out.numel() == y.numel() else out, y.float())
    if setup.loss_spec is not None and not setup.loss_spec.classification and out.numel() == y.numel():
        return setup.loss_fn(out.reshape(y.shape), y.to(out.dtype))
    return setup.loss_fn(out, y)


# -- 6. data ---------------------------------------------------------------------------------------
def _check_data(X: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor] | None, setup: _Setup,
                checks: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    flat = X.reshape(len(X), -1)
    info: dict[str, Any] = {"rows": len(X), "features": flat.shape[1]}
    checks["data"] = info
    if flat.is_floating_point():
        bad = ~torch.isfinite(flat)
        if bad.any():
            rows = bad.any(1).nonzero().reshape(-1)
            out.append(_finding(
                "data", "critical", f"{len(rows)} of {len(X)} rows hold NaN or Inf (first rows {rows[:5].tolist()}); "
                "every loss and gradient of a batch holding one becomes NaN",
                "impute or drop those rows before training (pandas: df.dropna(); sklearn: SimpleImputer)",
                check="nonfinite", rows=rows[:20].tolist(), count=int(len(rows))))
            return out
        values = flat.double()
        std, mean = values.std(0), values.mean(0)
        constant = (std == 0).nonzero().reshape(-1).tolist()
        info.update(std_min=float(std.min()), std_max=float(std.max()), mean_abs_max=float(mean.abs().max()))
        if constant and len(constant) < flat.shape[1] and X.ndim == 2:  # an image's border pixels may be constant
            out.append(_finding(
                "data", "warning", f"{len(constant)} feature{'s are' if len(constant) > 1 else ' is'} constant over "
                f"the {len(X)} rows read (features {constant[:10]}): they carry no information",
                "drop them, or check the loading (a column of one value is often a join or parsing error)",
                check="constant", features=constant[:50]))
        live = std > 0
        far = live & ((std > UNSCALED_STD) | (std < 1 / UNSCALED_STD) | (mean.abs() > UNSCALED_MEAN * std))
        if far.any() and X.ndim == 2:
            idx = far.nonzero().reshape(-1).tolist()
            out.append(_finding(
                "data", "warning", f"{len(idx)} of {flat.shape[1]} features are not scaled: standard deviations from "
                f"{float(std[live].min()):.3g} to {float(std[live].max()):.3g}, means up to "
                f"{float(mean.abs().max()):.3g} "
                "(a well-conditioned input has means near 0 and deviations near 1)",
                "standardize with the training data's statistics (sklearn StandardScaler fitted on training rows)",
                check="unscaled", features=idx[:50], std=[float(std[i]) for i in idx[:50]],
                mean=[float(mean[i]) for i in idx[:50]]))
        elif X.ndim > 2 and (float(std.max()) > UNSCALED_STD or float(mean.abs().max()) > UNSCALED_MEAN * 10):
            out.append(_finding(
                "data", "warning", f"the inputs are not scaled: values with means up to {float(mean.abs().max()):.3g} "
                f"and deviations up to {float(std.max()):.3g} (images are usually scaled to [0, 1] and normalized)",
                "divide by the pixel range and normalize per channel with the training data's mean and std",
                check="unscaled", std_max=float(std.max()), mean_abs_max=float(mean.abs().max())))
    if _classification(setup, y) and not y.is_floating_point():
        labels = y.reshape(-1)
        counts = torch.bincount(labels.clamp(min=0).long()).tolist() if len(labels) else []
        info["class_counts"] = counts
        n_out = setup.n_outputs(X)
        binary = setup.loss_spec is not None and setup.loss_spec.binary
        top = 2 if binary else n_out
        if labels.min() < 0 or labels.max() >= top:
            out.append(_finding(
                "data", "critical", f"labels run from {int(labels.min())} to {int(labels.max())}, but the model has "
                f"{n_out} output{'s' if n_out > 1 else ''} (classes 0..{top - 1})",
                "map the labels to 0..C-1, or give the last layer one output per class",
                check="labels", label_min=int(labels.min()), label_max=int(labels.max()), outputs=n_out))
            return out
        present = [c for c in counts if c > 0]
        if len(present) > 1:
            share = min(present) / len(labels)
            even = 1 / len(present)
            if share < RARE_CLASS * even:
                rare = int(np.argmin([c if c > 0 else np.inf for c in counts]))
                out.append(_finding(
                    "data", "warning", f"class {rare} is {100 * share:.1f}% of the rows (an even split would give "
                    f"{100 * even:.0f}%): accuracy can look good while that class is never predicted",
                    "weight the loss by class (CrossEntropyLoss(weight=...)), resample, and report per-class recall",
                    check="imbalance", counts=counts))
    if val is not None:
        out += _check_leak(X, val[0])
    return out


def _check_leak(X: torch.Tensor, X_val: torch.Tensor) -> list[Finding]:
    """Rows of the validation data that also appear in the training data (hashing every row)."""
    def keys(t: torch.Tensor) -> list[bytes]:
        flat = t.reshape(len(t), -1).detach().cpu().contiguous()
        array = flat.numpy()
        return [row.tobytes() for row in array]
    train = set(keys(X))
    shared = [i for i, k in enumerate(keys(X_val)) if k in train]
    if not shared:
        return []
    return [_finding(
        "data", "warning", f"{len(shared)} of {len(X_val)} validation rows also appear in the training data "
        f"(first {shared[:5]}): validation scores will flatter the model",
        "split before any augmentation or oversampling, and de-duplicate across the split "
        "(e.g. sklearn GroupShuffleSplit by a record id)", check="leak", rows=shared[:50], count=len(shared))]


# -- 1. loss at initialisation ----------------------------------------------------------------------
def _check_init_loss(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                     batch_size: int) -> list[Finding]:
    model = setup.evaluated
    x, t = X[:256], y[:256]
    with torch.no_grad():
        out = _outputs(model, x)
        value = float(_loss(setup, out, t))
    flat = out.reshape(len(out), -1).double()
    info: dict[str, Any] = {"loss": value}
    checks["init_loss"] = info
    found: list[Finding] = []
    name = type(setup.loss_fn).__name__ if isinstance(setup.loss_fn, nn.Module) else setup.loss_name
    classification = _classification(setup, y)
    if classification and flat.shape[1] > 1:
        C = flat.shape[1]
        expected = math.log(C)
        info.update(expected=expected, classes=C)
        sums = flat.sum(1)
        if isinstance(setup.loss_fn, nn.NLLLoss):
            lse = torch.logsumexp(flat, 1)
            info["logsumexp_max"] = float(lse.abs().max())
            if float(lse.abs().max()) > 1e-3:
                found.append(_finding(
                    "init_loss", "critical", f"NLLLoss expects log-probabilities, but the outputs' log-sum-exp is "
                    f"up to {float(lse.abs().max()):.3g} (0 for log-probabilities): the loss reads raw scores",
                    "end the model with nn.LogSoftmax(dim=1), or use cross_entropy on the raw logits",
                    check="not_log_probabilities", logsumexp_max=float(lse.abs().max())))
            return found
        if bool((flat >= 0).all()) and float((sums - 1).abs().max()) < 1e-4:
            found.append(_finding(
                "init_loss", "critical", f"the outputs are already probabilities (every row is non-negative and sums "
                f"to 1), but {name} applies its own softmax: probabilities squashed twice give weak, flat "
                "gradients", "remove the final softmax from the model (keep it for inference only), or use "
                "NLLLoss on log_softmax outputs", check="softmax_before_loss",
                row_sum_max_error=float((sums - 1).abs().max())))
        elif value > INIT_LOSS_FACTOR * expected:
            found.append(_finding(
                "init_loss", "warning", f"the loss at initialisation is {value:.3g}, {value / expected:.1f} times "
                f"log C = {expected:.3g} that near-zero logits give: the initialisation is over-confident (logit "
                f"std {float(flat.std()):.3g})", "scale down the last layer's initial weights (e.g. by 0.01) and "
                "zero its bias, so that training starts from a uniform prediction", check="over_confident",
                expected=expected, logit_std=float(flat.std())))
    elif classification and flat.shape[1] == 1 and setup.loss_spec is not None and setup.loss_spec.binary:
        info["expected"] = math.log(2)
        if bool(((flat >= 0) & (flat <= 1)).all()) and len(flat) >= 16 and float(flat.std()) > 0:
            found.append(_finding(
                "init_loss", "critical", "every output lies in [0, 1], as after a sigmoid, but BCEWithLogitsLoss "
                "applies its own sigmoid", "remove the final sigmoid (or use BCELoss on probabilities)",
                check="sigmoid_before_loss"))
        elif value > INIT_LOSS_FACTOR * math.log(2):
            found.append(_finding(
                "init_loss", "warning", f"the loss at initialisation is {value:.3g}, {value / math.log(2):.1f} times "
                "log 2: the initialisation is over-confident", "scale down the last layer's initial weights",
                check="over_confident", expected=math.log(2)))
    elif not classification and t.is_floating_point():
        target = t.double()
        second_moment = float((target ** 2).mean())
        variance = float(target.var()) if len(target) > 1 else 0.0
        info.update(expected=variance, target_mean_square=second_moment)
        if second_moment > 0 and value > 4 * second_moment:
            found.append(_finding(
                "init_loss", "warning", f"the loss at initialisation is {value:.3g}, {value / second_moment:.1f} times "
                f"the targets' mean square {second_moment:.3g} (what predicting 0 costs): the initial predictions are "
                "large", "scale down the last layer's initial weights; standardize the targets",
                check="large_predictions", target_mean_square=second_moment))
        elif variance > 0 and second_moment > 10 * variance:
            found.append(_finding(
                "init_loss", "info", f"the targets' mean ({float(target.mean()):.3g}) is large against their spread "
                f"(variance {variance:.3g}): the first steps will be spent moving the output to the mean",
                f"initialise the last layer's bias to the target mean ({float(target.mean()):.3g}), or standardize "
                "the targets", check="target_offset", target_mean=float(target.mean()), target_variance=variance))
    return found


# -- 2. input dependence ----------------------------------------------------------------------------
def _check_input_dependence(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                            batch_size: int) -> list[Finding]:
    model = setup.evaluated
    x = X[:64]
    if len(x) < 2:
        return []
    perm = torch.roll(torch.arange(len(x), device=x.device), 1)
    with torch.no_grad():
        out = _outputs(model, x).double()
        zero = _outputs(model, torch.zeros_like(x)).double()
        moved = _outputs(model, x[perm]).double()
    size = float(out.abs().mean()) + 1e-12
    change = max(float((out - zero).abs().mean()), float((out - moved).abs().mean())) / size
    checks["input_dependence"] = {"relative_change": change}
    if change < INPUT_DEPENDENCE:
        return [_finding(
            "input_ignored", "critical", f"the outputs do not depend on the input: replacing it by zeros or by "
            f"other rows moves them by {100 * change:.2g}% of their size",
            "check forward(): an input that is never used, a branch replaced by a constant, a detach() or "
            "torch.no_grad() on the path from the input", check="input_dependence", relative_change=change)]
    return []


# -- 3. batch independence --------------------------------------------------------------------------
def _check_batch_mixing(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                        batch_size: int) -> list[Finding]:
    """Change row 0 only; in eval mode no other row's output (nor any module's) may change."""
    model = setup.evaluated
    x = X[:4]
    if len(x) < 2:
        return []
    other = x.clone()
    if other.is_floating_point():
        other[0] = other[0] + torch.randn_like(other[0]) * (other.std() + 1.0)
    else:
        other[0] = torch.roll(other[-1], 1)
        if torch.equal(other[0], x[0]):
            other[0] = torch.roll(other[0], 1)
    records: list[list[tuple[str, torch.Tensor]]] = [[], []]
    names = {m: n for n, m in model.named_modules()}
    run = [0]

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim >= 1 and len(output) == len(x) \
                and output.is_floating_point():
            records[run[0]].append((names[module] or type(module).__name__, output.detach()))
    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            out_a = _outputs(model, x).detach()
            run[0] = 1
            out_b = _outputs(model, other).detach()
    finally:
        for h in handles:
            h.remove()
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    checks["batch_independence"] = {"rows": len(x), "batchnorm_in_model": batchnorm,
                                    "note": "checked in eval mode; BatchNorm mixes examples in training mode by "
                                            "design (batch statistics), which is not a bug" if batchnorm else
                                            "checked in eval mode"}

    def moved(a: torch.Tensor, b: torch.Tensor) -> bool:
        if a.shape != b.shape:
            return True
        rest_a, rest_b = a[1:].double(), b[1:].double()
        return float((rest_a - rest_b).abs().max()) > 1e-5 * (float(rest_a.abs().max()) + 1e-12)
    if not moved(out_a.reshape(len(x), -1), out_b.reshape(len(x), -1)):
        return []
    first = next((name for (name, a), (_, b) in zip(records[0], records[1], strict=False) if moved(a, b)), None)
    where = (f"the first module whose output mixes them is {first!r}: the operation is in it or just before it "
             "(in its parent's forward)") if first else "no module's output mixes them: it happens in the model's " \
        "own forward() between modules or after the last one"
    return [_finding(
        "batch_mixing", "critical", f"in eval mode, changing example 0 changes the outputs of examples 1-{len(x) - 1}: "
        f"the model mixes information across the batch; {where}",
        "look for a view/reshape that moves the batch dimension (use x.flatten(1) or x.view(len(x), -1), and "
        "transpose before view), or a mean/sum/softmax over dim 0", layer=first, check="batch_independence")]


# -- 4. gradients at step 0 ------------------------------------------------------------------------
def _check_gradients(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                     batch_size: int) -> list[Finding]:
    model, _ = setup.copies()
    model.train()
    x, t = X[:batch_size], y[:batch_size]
    value = _loss(setup, _outputs(model, x), t)
    found: list[Finding] = []
    if not torch.isfinite(value):
        return [_finding("no_gradient", "critical", f"the loss of the first batch is {float(value)}",
                         "check the inputs for NaN/Inf, the loss for log(0) (use the logits losses), and the "
                         "initialisation", check="loss_nonfinite")]
    value.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    nonfinite = [n for n, p in trainable if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    checks["gradients"] = {"trainable": len(trainable), "missing": missing, "nonfinite": nonfinite, "frozen": frozen}
    if nonfinite:
        found.append(_finding(
            "no_gradient", "critical", f"at step 0 the gradients of {len(nonfinite)} parameters hold NaN or Inf "
            f"(first: {nonfinite[0]})", "look for log(0), division by zero or sqrt of 0 in forward (add an eps), and "
            "for extreme initial weights", layer=nonfinite[0], check="nonfinite_gradient", parameters=nonfinite[:20]))
    if missing:
        modules = sorted({n.rsplit(".", 1)[0] if "." in n else n for n in missing})
        found.append(_finding(
            "no_gradient", "warning", f"{len(missing)} of {len(trainable)} trainable parameters get no gradient from "
            f"the loss (modules {', '.join(modules[:6])}{' ...' if len(modules) > 6 else ''}): they are never used "
            "in forward, or a detach()/no_grad cuts them off", "remove the unused modules, or find the detach() on "
            "their path; set requires_grad=False only where freezing is meant", layer=modules[0],
            check="missing_gradient", parameters=missing[:50]))
    if frozen:
        found.append(_finding(
            "no_gradient", "info", f"{len(frozen)} parameters are frozen (requires_grad=False; first: {frozen[0]}): "
            "they will not train", "if that is not meant, set requires_grad=True before building the optimizer",
            layer=frozen[0], check="frozen", parameters=frozen[:50]))
    return found


# -- 5. overfit one batch ---------------------------------------------------------------------------
def _train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, setup: _Setup,
                 batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]], steps: int,
                 stop: Callable[[float], bool] | None = None) -> list[float]:
    losses = []
    for step in range(steps):
        x, t = batches(step)
        optimizer.zero_grad(set_to_none=True)
        value = _loss(setup, _outputs(model, x), t)
        if not torch.isfinite(value):
            losses.append(float("inf"))
            break
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
        if stop is not None and stop(losses[-1]):
            break
    return losses


def _no_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()


def _check_overfit(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                   batch_size: int) -> list[Finding]:
    model, optimizer = setup.copies()
    model.train()
    _no_dropout(model)  # capacity and wiring are checked, not regularisation
    x, t = X[:OVERFIT_ROWS], y[:OVERFIT_ROWS]
    first: list[float] = []

    def stop(value: float) -> bool:
        if not first:
            first.append(value)
        return value <= OVERFIT_SHARE * first[0] or value < 1e-3
    losses = _train_steps(model, optimizer, setup, lambda _: (x, t), OVERFIT_STEPS, stop)
    final = losses[-1] if losses else float("nan")
    reached = bool(losses) and math.isfinite(final) and (final <= OVERFIT_SHARE * losses[0] or final < 1e-3)
    checks["overfit_one_batch"] = {"rows": len(x), "steps": len(losses), "initial": losses[0] if losses else None,
                                   "final": final, "reached": reached, "curve": _thin(losses)}
    if reached:
        return []
    return [_finding(
        "cannot_overfit", "warning", f"{setup.optimizer_name} could not overfit one batch of {len(x)} examples: "
        "the loss "
        f"went from {losses[0]:.3g} to {final:.3g} in {len(losses)} steps (near zero is below "
        f"{OVERFIT_SHARE * losses[0]:.3g})", "a model that cannot memorise 16 examples has a bug or too little "
        "room: check that labels match inputs, the loss suits the outputs, and the learning rate (too low stalls, "
        "too high bounces); then widen the model", check="overfit_one_batch", curve=_thin(losses))]


def _thin(values: list[float], points: int = 60) -> list[float]:
    if len(values) <= points:
        return [float(v) for v in values]
    idx = np.unique(np.linspace(0, len(values) - 1, points).round().astype(int))
    return [float(values[i]) for i in idx]


# -- 6b. label signal -------------------------------------------------------------------------------
def _constant_loss(setup: _Setup, y_train: torch.Tensor, y_test: torch.Tensor, n_outputs: int) -> float:
    """The held-out loss of the best constant prediction learned from the training labels."""
    if _classification(setup, y_train) and not y_train.is_floating_point():
        if setup.loss_spec is not None and setup.loss_spec.binary:
            p = float(y_train.float().mean().clamp(1e-6, 1 - 1e-6))
            q = y_test.float()
            return float(-(q * math.log(p) + (1 - q) * math.log(1 - p)).mean())
        counts = torch.bincount(y_train.long().reshape(-1), minlength=n_outputs).double() + 1.0
        prior = counts / counts.sum()
        return float(-torch.log(prior[y_test.long().reshape(-1)]).mean())
    mean = y_train.double().mean(0)
    return float(((y_test.double() - mean) ** 2).mean()) if isinstance(setup.loss_fn, nn.MSELoss) else math.nan


def _check_label_signal(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                        batch_size: int) -> list[Finding]:
    """Train a copy briefly on part of the data: its loss on held-out rows must beat the best
    constant prediction (labels that do not belong to their inputs never do)."""
    if len(X) < 128:
        return []
    held = min(512, len(X) // 4)
    x_test, t_test, x_train, t_train = X[:held], y[:held], X[held:], y[held:]
    n_out = setup.n_outputs(X)
    baseline = _constant_loss(setup, t_train, t_test, n_out)
    if not math.isfinite(baseline):
        return []
    model, optimizer = setup.copies()
    model.train()
    g = torch.Generator().manual_seed(1)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(x_train), (batch_size,), generator=g).to(x_train.device)
        return x_train[idx], t_train[idx]
    losses = _train_steps(model, optimizer, setup, batches, SIGNAL_STEPS)
    model.eval()
    with torch.no_grad():
        test = float(_loss(setup, _outputs(model, x_test), t_test))
    checks["label_signal"] = {"held_out_loss": test, "constant_loss": baseline, "steps": len(losses),
                              "train_loss_first": losses[0] if losses else None,
                              "train_loss_last": losses[-1] if losses else None}
    if math.isfinite(test) and test < (1 - SIGNAL_IMPROVEMENT) * baseline:
        return []
    return [_finding(
        "data", "warning", f"after {len(losses)} steps the held-out loss is {test:.3g}, no better than predicting "
        f"the label frequencies ({baseline:.3g}): the model finds nothing in the inputs that predicts the labels",
        "check that labels are aligned with their inputs (a shuffle of one but not the other, a sort, an off-by-one "
        "join); if they are, the learning rate may be far too low", check="label_signal", held_out_loss=test,
        constant_loss=baseline)]


# -- 7. learning-rate range test --------------------------------------------------------------------
def _steepest(logs: np.ndarray, losses: np.ndarray, lowest: int, window: int = 9) -> float:
    """The rate where the smoothed loss falls fastest before its minimum: the slope of a line
    fitted over ``window`` neighbouring points (single-point slopes follow the batches' noise),
    skipping the first points whose average still holds few batches. Where it does not fall
    measurably, a tenth of the rate at the minimum (Smith's rule of thumb)."""
    half = window // 2
    best, where = 0.0, None
    for i in range(max(half, 5), lowest + 1):
        seg = slice(max(0, i - half), min(len(logs), i + half + 1))
        slope = float(np.polyfit(logs[seg], losses[seg], 1)[0])
        if slope < best:
            best, where = slope, i
    drop = float(losses[: lowest + 1].max() - losses[lowest]) if lowest > 0 else 0.0
    if where is None or drop < 0.05 * float(abs(losses[0])) + 1e-12:
        return float(10 ** logs[lowest] / 10)
    return float(10 ** logs[where])



def _check_lr_range(X: torch.Tensor, y: torch.Tensor, setup: _Setup, checks: dict[str, Any],
                    batch_size: int) -> list[Finding]:
    """Smith (2017): one step at each of exponentially growing rates, the loss smoothed; the
    suggested rate is where it falls fastest. The user's rate beyond the blow-up is a warning."""
    model, optimizer = setup.copies()
    model.train()
    configured = float(optimizer.param_groups[0].get("lr", math.nan))
    top = max(LR_MAX, 10 * configured) if math.isfinite(configured) else LR_MAX  # your rate inside the test
    rates = np.geomspace(LR_MIN, top, LR_STEPS)
    g = torch.Generator().manual_seed(2)
    smoothed, raw, used, avg, best = [], [], [], 0.0, math.inf
    for i, rate in enumerate(rates):
        for group in optimizer.param_groups:
            group["lr"] = float(rate)
        idx = torch.randint(0, len(X), (min(batch_size, len(X)),), generator=g).to(X.device)
        optimizer.zero_grad(set_to_none=True)
        value = _loss(setup, _outputs(model, X[idx]), y[idx])
        if not torch.isfinite(value):
            break
        value.backward()
        optimizer.step()
        avg = 0.98 * avg + 0.02 * float(value.detach())
        s = avg / (1 - 0.98 ** (i + 1))
        raw.append(float(value.detach()))
        smoothed.append(s)
        used.append(float(rate))
        best = min(best, s)
        if i > 10 and s > LR_DIVERGE * best:
            break
    if len(smoothed) < 10:
        checks["lr_range"] = {"rates": used, "losses": smoothed, "suggested": None}
        return []
    lo = int(np.argmin(smoothed))
    suggested = _steepest(np.log10(used), np.asarray(smoothed), lo)
    diverged = float(used[-1]) if len(used) < len(rates) else None
    checks["lr_range"] = {"rates": used, "losses": smoothed, "raw": raw, "suggested": suggested,
                          "minimum_at": float(used[lo]), "diverged_at": diverged, "configured": configured}
    found = [_finding(
        "lr_range", "info", f"learning-rate range test ({setup.optimizer_name}): the loss falls fastest at "
        f"{suggested:.2g} and is lowest at {float(used[lo]):.2g}" + (f"; it blows up past {diverged:.2g}" if diverged
                                                                     else "") + f" (yours: {configured:.2g})",
        f"start near {suggested:.2g} (or a tenth of {float(used[lo]):.2g}); a one-cycle or cosine schedule can peak "
        "at the minimum", check="lr_range", suggested=suggested, minimum_at=float(used[lo]), diverged_at=diverged,
        configured=configured)]
    if diverged is not None and math.isfinite(configured) and configured >= diverged:
        found.append(_finding(
            "lr_range", "warning", f"your learning rate {configured:.2g} is at or beyond {diverged:.2g}, where the "
            "range test's loss blew up: training is likely to diverge", f"lower it to about {suggested:.2g}",
            check="lr_too_high", configured=configured, diverged_at=diverged, suggested=suggested))
    return found


__all__ = ["Preflight", "load", "preflight"]
