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
    sorted by |attribution|; for token ids, one per token (``feature`` the token string, ``value``
    its id, ``position``). ``attribution_map``: the attributions shaped like the input (images);
    ``tokens``: the row's token strings in order (token inputs; padding left out).
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
    tokens: list[str] | None = None

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
        tokens: for token-id inputs, the token string of every position, per row;
            ``token_mask`` (rows, positions) marks the positions that hold a token (attention mask).
        rows: when every class is explained, the input row of each explained row (they come
            row by row, class by class: ``values.reshape(n_rows, n_classes, ...)``); else None.
        explained: in words, which output the explanation explains.
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
    tokens: list[list[str]] | None = None
    token_mask: np.ndarray | None = None
    rows: np.ndarray | None = None
    explained: str = ""

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_rows(self) -> int:
        """The number of input rows explained (``len`` counts explained rows: rows x classes when
        every class is explained)."""
        return len(self) if self.rows is None else int(self.rows.max()) + 1 if len(self.rows) else 0

    @property
    def flat_values(self) -> np.ndarray:
        """Attributions as (rows, features)."""
        return self.values.reshape(len(self.values), -1)

    def global_importance(self, by_class: bool = False) -> pd.DataFrame:
        """Mean |attribution| per feature, its spread (std) and rank (1 = most important); with
        ``by_class``, one block per explained class (column ``class``). For token ids the features
        are the token strings, over every position they occupy (column ``count``: occurrences)."""
        if not by_class:
            return self._importance(np.ones(len(self), dtype=bool))
        frames = []
        for cls in np.unique(self.targets):
            frame = self._importance(self.targets == cls)
            frame.insert(0, "class", self.class_names[cls] if self.class_names else int(cls))
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def local(self, i: int) -> LocalExplanation:
        """The explanation of input row ``i`` (when every class was explained, of its predicted class)."""
        if not -self.n_rows <= i < self.n_rows:
            raise IndexError(f"i: row {i} is out of range for {self.n_rows} explained rows")
        i = row = i % self.n_rows
        if self.rows is not None:  # the entry of row i's predicted class
            entries = np.flatnonzero(self.rows == i)
            i = int(entries[np.flatnonzero(self.targets[entries] == self.predictions[entries[0]])[0]])
        attr = self.flat_values[i]
        row_tokens = None
        if self.tokens is not None:
            positions = np.flatnonzero(self._mask()[i])
            order = positions[np.argsort(-np.abs(attr[positions]), kind="stable")]
            row_tokens = [self.tokens[i][p] for p in positions]
            contributions = pd.DataFrame({"feature": [self.tokens[i][p] for p in order], "value": self.data[i][order],
                                          "attribution": attr[order], "position": order})
        else:
            order = np.argsort(-np.abs(attr), kind="stable")
            contributions = pd.DataFrame({"feature": np.asarray(self.feature_names)[order],
                                          "value": self.data.reshape(len(self.data), -1)[i][order],
                                          "attribution": attr[order]}).reset_index(drop=True)
        prediction = self.predictions[i]
        return LocalExplanation(
            index=row, prediction=prediction.item(), target=int(self.targets[i]),
            probabilities=None if self.probabilities is None else self.probabilities[i],
            output=float(self.outputs[i]), base_value=float(self.base_values[i]), contributions=contributions,
            attribution_map=self.values[i], method=self.method, output_kind=self.output_kind,
            class_names=self.class_names, tokens=row_tokens)

    def to_frame(self) -> pd.DataFrame:
        """Attributions as a DataFrame: one row per input, one column per feature."""
        return pd.DataFrame(self.flat_values, columns=self.feature_names)

    def to_shap(self) -> shap.Explanation:
        """A ``shap.Explanation`` (values, base values, data, feature names), so every shap plot works.
        Images (N, C, H, W) keep their shape, channels last as ``shap.image_plot`` reads them."""
        import shap
        if self.tokens is not None:  # one entry per row, padding left out (shap.plots.text takes a row)
            mask = self._mask()
            rows = [np.flatnonzero(m) for m in mask]
            values = [self.values[i][r].astype(float) for i, r in enumerate(rows)]
            data = [np.asarray([self.tokens[i][p] for p in r], dtype=object) for i, r in enumerate(rows)]
            if len({len(r) for r in rows}) == 1:
                return shap.Explanation(values=np.stack(values), base_values=self.base_values,
                                        data=np.stack(data), output_names=self.output_kind)
            ragged_values, ragged_data = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=object)
            ragged_values[:], ragged_data[:] = values, data
            return shap.Explanation(values=ragged_values, base_values=self.base_values, data=ragged_data,
                                    output_names=self.output_kind)
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


    def _mask(self) -> np.ndarray:
        return self.token_mask if self.token_mask is not None else np.ones(self.values.shape, dtype=bool)

    def _importance(self, rows: np.ndarray) -> pd.DataFrame:
        if self.tokens is None:
            return _importance(self.flat_values[rows], self.feature_names)
        mask = self._mask() & rows[:, None]
        names = np.asarray([t for i, row in enumerate(self.tokens) for t in row], dtype=object)
        values = self.values.reshape(-1)[mask.reshape(-1)]
        frame = pd.DataFrame({"feature": names[mask.reshape(-1)], "value": values, "abs": np.abs(values)})
        grouped = frame.groupby("feature", sort=False)
        out = pd.DataFrame({"mean_abs": grouped["abs"].mean(), "std_abs": grouped["abs"].std(ddof=0),
                            "mean": grouped["value"].mean(), "count": grouped["value"].size()}).reset_index()
        out["rank"] = out["mean_abs"].rank(ascending=False, method="min").astype(int)
        return out.sort_values("rank", kind="stable").reset_index(drop=True)


def _importance(values: np.ndarray, names: list[str]) -> pd.DataFrame:
    magnitude = np.abs(values)
    frame = pd.DataFrame({"feature": names, "mean_abs": magnitude.mean(axis=0),
                          "std_abs": magnitude.std(axis=0), "mean": values.mean(axis=0)})
    frame["rank"] = frame["mean_abs"].rank(ascending=False, method="min").astype(int)
    return frame.sort_values("rank", kind="stable").reset_index(drop=True)
