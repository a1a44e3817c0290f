"""River transformers of our own, dict in, dict out."""

from __future__ import annotations

from typing import Any

from river import preprocessing


class NumericStandardScaler(preprocessing.StandardScaler):
    """Standard scaling of numeric features; one-hot indicators (``"name=value"``) pass through.

    A plain :class:`~river.preprocessing.StandardScaler` sees a sparse indicator
    only when it is 1, so its variance stays 0 and it scales it to 0: the
    model never sees categories. This one leaves them as they are. ``clip`` bounds
    the scaled values to [-clip, clip]: a heavy-tailed feature (an amount drawn from a
    log-normal) scaled to 20 sd makes one answer of a linear model absurd.

    >>> s = NumericStandardScaler()
    >>> for x in ({"d": 1.0, "c=a": 1.0}, {"d": 3.0, "c=b": 1.0}):
    ...     s.learn_one(x)
    >>> s.transform_one({"d": 3.0, "c=a": 1.0})
    {'d': 1.0, 'c=a': 1.0}
    >>> s.clip = 2.0
    >>> s.transform_one({"d": 11.0})
    {'d': 2.0}
    """

    def __init__(self, with_std: bool = True, clip: float | None = None) -> None:
        super().__init__(with_std=with_std)
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {clip!r}")
        self.clip = clip

    def learn_one(self, x: dict[str, Any]) -> None:
        # River's update on the numeric features, in one pass (no filtered copy of ``x``): the same
        # operations in the same order, so the same doubles and the same state.
        if self.window_size is not None or not self.with_std:
            super().learn_one({k: v for k, v in x.items() if "=" not in k})
            return
        counts, means, vars_ = self.counts, self.means, self.vars
        for i, xi in x.items():
            if "=" in i:
                continue
            counts[i] += 1
            old_mean = means[i]
            means[i] += (xi - old_mean) / counts[i]
            vars_[i] += ((xi - old_mean) * (xi - means[i]) - vars_[i]) / counts[i]

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        clip = self.__dict__.get("clip")  # (pickled before the setting existed: None)
        if self.window_size is not None or not self.with_std:
            numeric = {}
            out = {}
            for k, v in x.items():
                if "=" in k:
                    out[k] = v
                else:
                    numeric[k] = v
            scaled = super().transform_one(numeric)
            if clip is not None:
                scaled = {k: min(max(v, -clip), clip) for k, v in scaled.items()}
            scaled.update(out)
            return scaled
        # River's scaling in one pass (the live path calls this twice an event): the numeric features in
        # their order, then the indicators, as River's result followed by them; unseen names enter
        # ``vars`` as River's lookup enters them.
        means, vars_ = self.means, self.vars
        scaled = {}
        out = {}
        if clip is None:
            for k, v in x.items():
                if "=" in k:
                    out[k] = v
                else:
                    var = vars_[k]
                    scaled[k] = (v - means[k]) / var**0.5 if var else 0.0
        else:
            lo = -clip
            for k, v in x.items():
                if "=" in k:
                    out[k] = v
                else:
                    var = vars_[k]
                    scaled[k] = min(max((v - means[k]) / var**0.5 if var else 0.0, lo), clip)
        scaled.update(out)
        return scaled
