"""A River checkpoint as an MLflow ``pyfunc`` model.

:class:`RiverModel` loads the pickled River estimator from its artifact in
``load_context`` (after checking the bytes against their sha256, then against
their HMAC with the riverlake key: ``$RIVERLAKE_KEY`` or the key file, see
:mod:`lake.integrity`; a model without an HMAC is refused) and predicts
P(y=1) for each row of a DataFrame of features::

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/riverlake-linear@champion")
    model.predict(pd.DataFrame([{"x1": 0.3, "x2": -1.0, "colour=red": 1.0}]))

A missing (NaN/None) cell means the feature is absent, as in River's sparse dicts.
A run with one model per key (``per_key``) logs all its keys' models as one: give
its input a ``key`` column (the event's entity key, e.g. ``"JFK-LAX"``); a key
the model never learned from is scored by the blank model.
This module imports only what a serving environment has (mlflow, pandas): it is
copied into the logged model (``code_paths``) together with the riverlake
transformers a pickled estimator may refer to and :mod:`lake.integrity` (as the
top-level module ``riverlake_integrity``, so it never shadows an installed
``lake`` package), so the model loads where riverlake is not installed.

What the HMAC does not cover: MLflow itself unpickles the wrapper
(``python_model.pkl``, cloudpickle) and imports the copied code before
``load_context`` runs, so whoever can write the artifact store can run code in a
process that loads the model; keep the MLflow store where lake writers cannot write.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import mlflow.pyfunc

ARTIFACT = "river"
"""Key of the model bytes in ``context.artifacts``."""

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_CODE = {"flows": ["mlflow_model.py"], "dataflows": ["transformers.py", "sparse.py", "perkey.py"]}
"""Riverlake modules the logged model needs: this wrapper, and our own estimators and transformers."""
_INTEGRITY = ("lake/integrity.py", "riverlake_integrity.py")
"""The HMAC check, logged as a top-level module of its own."""

KEY_COLUMN = "key"
"""Input column naming the entity key, for per-key models."""


class ModelBytesMismatch(ValueError):
    """The model bytes do not hash to the sha256 recorded with them."""


class RiverModel(mlflow.pyfunc.PythonModel):
    """Serves a pickled River binary classifier; ``predict`` returns P(y=1) per row."""

    def load_context(self, context: Any) -> None:
        integrity = _integrity()
        data = Path(context.artifacts[ARTIFACT]).read_bytes()
        config = context.model_config or {}
        expected = config.get("sha256")
        actual = hashlib.sha256(data).hexdigest()
        if expected and actual != expected:  # never unpickle bytes that are not what was logged
            raise ModelBytesMismatch(f"model bytes have sha256 {actual}, the model was logged with {expected}")
        run_id, checkpoint = config.get("run_id"), config.get("checkpoint_id")
        purpose = integrity.checkpoint_purpose(str(run_id), str(checkpoint))
        # never skipped: a model logged without an HMAC (or with it removed) is refused
        self.estimator = integrity.loads(data, config.get("hmac"), purpose=purpose,
                                         what=f"MLflow model of checkpoint {checkpoint!r} of run {run_id!r}")

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would infer a signature
        """P(y=1) for each row of a DataFrame (or each dict of a list) of features."""
        import pandas as pd

        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        if getattr(self.estimator, "keyed", False):
            scores = []
            for i, row in enumerate(rows):
                row = dict(row)
                if row.get(KEY_COLUMN) is None:
                    raise ValueError(f"row {i}: this model holds one model per key: give each row a "
                                     f"{KEY_COLUMN!r} column (the event's entity key)")
                key = str(row.pop(KEY_COLUMN))
                scores.append(score(self.estimator, _present(row), key=key))
            return pd.Series(scores, name="score", dtype="float64")
        return pd.Series([score(self.estimator, _present(row)) for row in rows], name="score", dtype="float64")


def score(estimator: Any, x: dict[str, float], *, key: str | None = None) -> float:
    """P(y=1), 0.5 before the model has seen a class (the rule of ``dataflows.models.score_one``);
    ``key`` picks the key's model of a per-key estimator."""
    keyed = getattr(estimator, "keyed", False)
    proba = estimator.predict_proba_one(x, key) if keyed else estimator.predict_proba_one(x)
    if not proba:
        return 0.5
    return float(proba.get(True, 0.0))


def _present(row: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in row.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))}


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model (explicit: inferring them takes seconds)."""
    import cloudpickle
    import pandas
    import river

    return [f"river=={river.__version__}", f"pandas=={pandas.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def _integrity() -> Any:
    """:mod:`lake.integrity`, or where riverlake is not installed, its copy logged with the model."""
    try:
        from lake import integrity
    except ImportError:
        import riverlake_integrity as integrity  # type: ignore[import-not-found,no-redef]
    return integrity


def stage_code(directory: str | Path) -> list[str]:
    """Copy the riverlake modules a logged model needs under ``directory``; returns the ``code_paths``."""
    source, name = _INTEGRITY
    Path(directory).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_PACKAGE_ROOT / source, Path(directory) / name)
    paths = [str(Path(directory) / name)]
    for package, modules in _CODE.items():
        dest = Path(directory) / package
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "__init__.py").touch()
        for module in modules:
            shutil.copyfile(_PACKAGE_ROOT / package / module, dest / module)
        paths.append(str(dest))
    return paths
