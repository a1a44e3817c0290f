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
        super().learn_one({k: v for k, v in x.items() if "=" not in k})

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        numeric = {}
        out = {}
        for k, v in x.items():
            if "=" in k:
                out[k] = v
            else:
                numeric[k] = v
        scaled = super().transform_one(numeric)
        clip = self.__dict__.get("clip")  # (pickled before the setting existed: None)
        if clip is not None:
            scaled = {k: min(max(v, -clip), clip) for k, v in scaled.items()}
        scaled.update(out)
        return scaled
