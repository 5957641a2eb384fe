"""The common result of every attribution method: ``Explanation``, and one row's ``LocalExplanation``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import shap


@dataclass
class LocalExplanation:
    """Why the model predicted what it did for one input.

    ``contributions``: one row per feature (``feature``, ``value`` of the input, ``attribution``),
    sorted by |attribution|. ``attribution_map``: the attributions shaped like the input (images).
    """

    index: int
    prediction: int | float
    probabilities: np.ndarray | None
    target: int
    output: float
    base_value: float
    contributions: pd.DataFrame
    attribution_map: np.ndarray
    method: str
    output_kind: str
    class_names: list[str] | None = None

    def __repr__(self) -> str:
        top = ", ".join(f"{r.feature}={r.attribution:+.3g}" for r in self.contributions.head(3).itertuples())
        return (f"LocalExplanation(row {self.index}: predicted {self.prediction}, explained {self.output_kind} "
                f"{self.output:.4g} = base {self.base_value:.4g} + contributions; top: {top})")


@dataclass
class Explanation:
    """Attributions of one method for a batch of inputs.

    Attributes:
        values: attributions shaped like the inputs (one target per row).
        base_values: the reference output per row: f(baseline), or E[f(background)] for SHAP.
        outputs: the explained output per row (the target's logit, or probability).
        targets: the explained class per row.
        data: the explained inputs.
        feature_names: one name per feature (flattened for images).
        method, params: the method and its settings.
        output_kind: ``logit`` (the model's raw output) or ``probability``.
        quality: the quality checks (completeness/additivity gap, infidelity, sensitivity,
            randomization), see ``diagnose/explain/quality.py``.
    """

    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    targets: np.ndarray
    data: np.ndarray
    feature_names: list[str]
    method: str
    params: dict[str, Any]
    output_kind: str
    predictions: np.ndarray
    probabilities: np.ndarray | None
    quality: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def flat_values(self) -> np.ndarray:
        """Attributions as (rows, features)."""
        return self.values.reshape(len(self.values), -1)

    def global_importance(self, by_class: bool = False) -> pd.DataFrame:
        """Mean |attribution| per feature, its spread (std) and rank (1 = most important); with
        ``by_class``, one block per explained class (column ``class``)."""
        if not by_class:
            return _importance(self.flat_values, self.feature_names)
        frames = []
        for cls in np.unique(self.targets):
            frame = _importance(self.flat_values[self.targets == cls], self.feature_names)
            frame.insert(0, "class", self.class_names[cls] if self.class_names else int(cls))
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def local(self, i: int) -> LocalExplanation:
        """The explanation of row ``i``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"i: row {i} is out of range for {len(self)} explained rows")
        i = i % len(self)
        attr = self.flat_values[i]
        order = np.argsort(-np.abs(attr), kind="stable")
        contributions = pd.DataFrame({"feature": np.asarray(self.feature_names)[order],
                                      "value": self.data.reshape(len(self.data), -1)[i][order],
                                      "attribution": attr[order]}).reset_index(drop=True)
        prediction = self.predictions[i]
        return LocalExplanation(
            index=i, prediction=prediction.item(), target=int(self.targets[i]),
            probabilities=None if self.probabilities is None else self.probabilities[i],
            output=float(self.outputs[i]), base_value=float(self.base_values[i]), contributions=contributions,
            attribution_map=self.values[i], method=self.method, output_kind=self.output_kind,
            class_names=self.class_names)

    def to_frame(self) -> pd.DataFrame:
        """Attributions as a DataFrame: one row per input, one column per feature."""
        return pd.DataFrame(self.flat_values, columns=self.feature_names)

    def to_shap(self) -> shap.Explanation:
        """A ``shap.Explanation`` (values, base values, data, feature names), so every shap plot works.
        Images (N, C, H, W) keep their shape, channels last as ``shap.image_plot`` reads them."""
        import shap
        if self.values.ndim == 4:
            return shap.Explanation(values=self.values.transpose(0, 2, 3, 1), base_values=self.base_values,
                                    data=self.data.transpose(0, 2, 3, 1))
        return shap.Explanation(values=self.flat_values, base_values=self.base_values,
                                data=self.data.reshape(len(self.data), -1), feature_names=self.feature_names,
                                output_names=self.output_kind)

    def __repr__(self) -> str:
        gap = self.quality.get("completeness", {}).get("max_abs_gap")
        gap_text = f", completeness gap {gap:.2g}" if gap is not None else ""
        return f"Explanation({self.method}, {len(self)} rows x {len(self.feature_names)} features{gap_text})"


def _importance(values: np.ndarray, names: list[str]) -> pd.DataFrame:
    magnitude = np.abs(values)
    frame = pd.DataFrame({"feature": names, "mean_abs": magnitude.mean(axis=0),
                          "std_abs": magnitude.std(axis=0), "mean": values.mean(axis=0)})
    frame["rank"] = frame["mean_abs"].rank(ascending=False, method="min").astype(int)
    return frame.sort_values("rank", kind="stable").reset_index(drop=True)
