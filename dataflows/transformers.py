"""River transformers of our own, dict in, dict out."""

from __future__ import annotations

from typing import Any

from river import preprocessing


class NumericStandardScaler(preprocessing.StandardScaler):
    """Standard scaling of numeric features; one-hot indicators (``"name=value"``) pass through.

    A plain :class:`~river.preprocessing.StandardScaler` sees a sparse indicator
    only when it is 1, so its variance stays 0 and it scales it to 0: the
    model never sees categories. This one leaves them as they are.

    >>> s = NumericStandardScaler()
    >>> for x in ({"d": 1.0, "c=a": 1.0}, {"d": 3.0, "c=b": 1.0}):
    ...     s.learn_one(x)
    >>> s.transform_one({"d": 3.0, "c=a": 1.0})
    {'d': 1.0, 'c=a': 1.0}
    """

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
        scaled.update(out)
        return scaled
