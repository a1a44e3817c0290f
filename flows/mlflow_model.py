"""A River checkpoint as an MLflow ``pyfunc`` model.

:class:`RiverModel` loads the pickled River estimator (and the featurizer state it predicted
with, where the checkpoint kept it) from its artifacts in ``load_context``, after checking the
bytes against their sha256, then against their HMAC with the riverlake key (``$RIVERLAKE_KEY`` or
the key file, see :mod:`lake.integrity`; a model without an HMAC is refused). ``predict`` takes
a DataFrame (or a list of dicts) in either of two forms, told apart by the columns present:

- raw events, as the lake's ``events`` table has them: ``key``, ``event_time`` and the payload
  columns (``event_id`` optional). Each row is featurized with the checkpoint's featurizer state
  (per-key history as of the checkpoint, read only: predicting changes nothing), as the dataflow
  featurized the events after that checkpoint;
- feature columns, as ``predictions.features`` holds them (``x1``, ``colour=red``, ``key_n``...).

It returns a DataFrame per row with the answer of the run's task (the lake's, :mod:`lake.tasks`),
the dataflow's ``predictions`` columns (:func:`lake.scoring.task_answer`):

- binary: ``score`` (P(y=1)) and ``prediction`` (``score >= threshold``, the run's threshold);
- regression: ``score`` and ``prediction``, both the predicted value;
- multiclass: ``score`` (the predicted class's probability), ``prediction`` (the class, as text)
  and ``probabilities`` (a dict of every known class's probability).

::

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/riverlake-linear@champion")
    model.predict(pd.DataFrame([{"key": "JFK-LAX", "event_time": "2013-12-01T08:00:00", "carrier": "UA"}]))
    model.predict(pd.DataFrame([{"x1": 0.3, "x2": -1.0, "colour=red": 1.0}]))

A naive ``event_time`` is UTC; an integer one is microseconds since the epoch. A missing
(NaN/None) cell means the field or feature is absent, as in River's sparse dicts. A model of a
checkpoint written before checkpoints kept their featurizer state takes feature columns only.
A run with one model per key (``per_key``) logs all its keys' models as one: give
its input a ``key`` column (the event's entity key, e.g. ``"JFK-LAX"``); a key
the model never learned from is scored by the blank model.
This module imports only what a serving environment has (mlflow, pandas): it is
copied into the logged model (``code_paths``) together with the riverlake
featurizer and transformers a pickle may refer to, :mod:`lake.integrity` and
:mod:`lake.scoring` (as the top-level modules ``riverlake_integrity`` and
``riverlake_scoring``, so they never shadow an installed ``lake`` package), so the model loads
where riverlake is not installed.

What the HMAC does not cover: MLflow itself unpickles the wrapper
(``python_model.pkl``, cloudpickle) and imports the copied code before
``load_context`` runs, so whoever can write the artifact store can run code in a
process that loads the model; keep the MLflow store where lake writers cannot write.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import shutil
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from pandas import NA as _NA
from pandas import NaT as _NaT

ARTIFACT = "river"
"""Key of the model bytes in ``context.artifacts``."""
FEATURIZER = "featurizer"
"""Key of the featurizer state in ``context.artifacts`` (absent for checkpoints that did not keep it)."""

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_CODE = {"flows": ["mlflow_model.py"],
         "dataflows": ["transformers.py", "sparse.py", "perkey.py", "features.py", "regressors.py", "class_shares.py",
                       "seeded.py"]}
"""Riverlake modules the logged model needs: this wrapper, our own estimators and transformers, the featurizer."""
_INTEGRITY = ("lake/integrity.py", "riverlake_integrity.py")
"""The HMAC check, logged as a top-level module of its own."""
_SCORING = ("lake/scoring.py", "riverlake_scoring.py")
"""The task's answer rule (:func:`lake.scoring.task_answer`), logged as a top-level module of its own."""

KEY_COLUMN = "key"
"""Input column naming the entity key: of raw events, and of features for per-key models."""
TIME_COLUMN = "event_time"
"""Input column whose presence makes the input raw events."""
NOT_PAYLOAD = frozenset({"event_id", "event_time", "key", "offset"})
"""Columns of a raw event that are no payload (the ``events`` table's fixed columns)."""


class ModelBytesMismatch(ValueError):
    """The model bytes do not hash to the sha256 recorded with them."""


class RiverModel(mlflow.pyfunc.PythonModel):
    """Serves a pickled River estimator: ``predict`` gives its task's ``score`` and ``prediction`` (and a
    multiclass model's ``probabilities``) per row of raw events or of features."""

    def load_context(self, context: Any) -> None:
        import pickle

        integrity = _integrity()
        data = Path(context.artifacts[ARTIFACT]).read_bytes()
        state = context.artifacts.get(FEATURIZER)
        featurizer = Path(state).read_bytes() if state else None
        config = context.model_config or {}
        expected = config.get("sha256")
        actual = hashlib.sha256(data).hexdigest()
        if expected and actual != expected:  # never unpickle bytes that are not what was logged
            raise ModelBytesMismatch(f"model bytes have sha256 {actual}, the model was logged with {expected}")
        run_id, checkpoint = str(config.get("run_id")), str(config.get("checkpoint_id"))
        # never skipped: a model logged without an HMAC (or with it removed) is refused
        integrity.verify_checkpoint(data, featurizer, config.get("hmac"), run_id=run_id, checkpoint_id=checkpoint,
                                    what=f"MLflow model of checkpoint {checkpoint!r} of run {run_id!r}")
        self.estimator = pickle.loads(data)  # verified above
        self.featurizer = None if featurizer is None else pickle.loads(featurizer)  # verified above
        self.threshold = float(config.get("threshold", 0.5))
        self.task = str(config.get("task", "binary"))  # models logged before tasks existed are binary
        self.checkpoint = f"{run_id}/{checkpoint}"

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would infer a signature
        """The task's answer for each row of a DataFrame (or each dict of a list) of raw events
        (a ``event_time`` column) or of features."""
        import pandas as pd

        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        keyed = getattr(self.estimator, "keyed", False)
        if rows and any(TIME_COLUMN in row for row in rows):
            xs, keys = self._featurize(rows)
        else:
            xs, keys = [], []
            for i, row in enumerate(rows):
                row = dict(row)
                key = row.pop(KEY_COLUMN, None)
                if keyed and _missing(key):
                    raise ValueError(f"row {i}: this model holds one model per key: give each row a "
                                     f"{KEY_COLUMN!r} column (the event's entity key)")
                xs.append(_present(row))
                keys.append(None if _missing(key) else str(key))
        answer = _scoring().task_answer
        answers = [answer(self.task, self.estimator, x, k if keyed else None, threshold=self.threshold)
                   for x, k in zip(xs, keys, strict=True)]
        out = pd.DataFrame({"score": pd.Series([a[1] for a in answers], dtype="float64"),
                            "prediction": pd.Series([a[0] for a in answers],
                                                    dtype=_PREDICTION_DTYPES.get(self.task, "object"))})
        if self.task == "multiclass":
            out["probabilities"] = [a[2] for a in answers]
        return out

    def _featurize(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, float]], list[str]]:
        """Features and keys of raw events, from the checkpoint's featurizer state (which only reads it)."""
        if self.featurizer is None:
            raise ValueError(f"checkpoint {self.checkpoint!r} was written before checkpoints kept their featurizer "
                             "state: give this model feature columns (as in predictions.features), not raw events")
        xs, keys = [], []
        for i, row in enumerate(rows):
            key = row.get(KEY_COLUMN)
            if _missing(key) or _missing(row.get(TIME_COLUMN)):
                raise ValueError(f"row {i}: a raw event needs {KEY_COLUMN!r} and {TIME_COLUMN!r} "
                                 f"(got {KEY_COLUMN}={key!r}, {TIME_COLUMN}={row.get(TIME_COLUMN)!r})")
            payload = {str(k): _native(v) for k, v in row.items() if k not in NOT_PAYLOAD}
            xs.append(self.featurizer.transform_one(payload, key=str(key),
                                                    event_time_us=event_time_us(row[TIME_COLUMN], row=i)))
            keys.append(str(key))
        return xs, keys


def event_time_us(value: Any, *, row: int = 0) -> int:
    """Microseconds since the epoch (UTC) of an event time: a datetime or timestamp (naive: UTC), an ISO
    string, or an integer (microseconds)."""
    import pandas as pd

    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as ex:
        raise ValueError(f"row {row}: event_time {value!r} is not a time: {ex}") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.value // 1000


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is _NA or value is _NaT


def _native(value: Any) -> Any:
    """A cell as the lake's replay gives it: None for missing, Python numbers and strings."""
    if _missing(value):
        return None
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) and not isinstance(value, str | bytes) else value


_PREDICTION_DTYPES = {"binary": "int64", "regression": "float64", "multiclass": "object"}
"""pandas dtype of the ``prediction`` column per task (the class of a multiclass model is text)."""


def _present(row: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in row.items() if not _missing(v)}


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model (explicit: inferring them takes seconds)."""
    import cloudpickle
    import pandas
    import river

    return [f"river=={river.__version__}", f"pandas=={pandas.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def _lake_module(name: str, *, needs: str) -> Any:
    """``lake.<name>``, or where riverlake is not installed (or is older than the model: no ``needs``
    attribute), its copy ``riverlake_<name>`` logged with the model."""
    try:
        module = importlib.import_module(f"lake.{name}")
    except ImportError:
        module = None
    if module is None or not hasattr(module, needs):
        module = importlib.import_module(f"riverlake_{name}")
    return module


def _scoring() -> Any:
    """:mod:`lake.scoring` or its logged copy."""
    return _lake_module("scoring", needs="task_answer")


def _integrity() -> Any:
    """:mod:`lake.integrity` or its logged copy."""
    return _lake_module("integrity", needs="verify_checkpoint")


def stage_code(directory: str | Path) -> list[str]:
    """Copy the riverlake modules a logged model needs under ``directory``; returns the ``code_paths``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    paths = []
    for source, name in (_INTEGRITY, _SCORING):
        shutil.copyfile(_PACKAGE_ROOT / source, Path(directory) / name)
        paths.append(str(Path(directory) / name))
    for package, modules in _CODE.items():
        dest = Path(directory) / package
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "__init__.py").touch()
        for module in modules:
            shutil.copyfile(_PACKAGE_ROOT / package / module, dest / module)
        paths.append(str(dest))
    return paths
