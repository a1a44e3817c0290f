"""A run's settings: typed, validated, frozen, one default each, grouped by concern.

Every setting is written once, as a field of one group below; from there it reaches
everything that takes settings:

- keyword arguments: ``build_flow(lake, model, shards=2)``, ``build_live_flow(...)``,
  ``replay_job(...)`` or ``RunSettings.replay(shards=2)``;
- the environment: ``RIVERLAKE_<NAME>`` for every field (``RIVERLAKE_SHARDS=2``; lists as
  ``a,b``, booleans as 1/0, true/false, yes/no, on/off), read by :meth:`RunSettings.from_env`
  (``python -m bytewax.run dataflows.online:flow``, the ``riverlake`` command);
- the command line: ``riverlake replay --shards 2`` (:mod:`flows.cli` makes one option per field);
- the run identity (:meth:`RunSettings.identity`): every field, except those marked
  ``affects_results=False`` (where rows are written, how often, how fast), so two runs that
  could write different rows never share a run id;
- the learner's :class:`~dataflows.learner.RunConfig` (:meth:`RunSettings.run_config`).

Size: every setting of a run is declared here, once, with its default and its one-line doc; split,
a new setting would have more than one place to go.

The groups: :class:`ReplaySettings` (the replayed input) or :class:`LiveSettings` (the Kafka
source), and for both :class:`FeaturizerSettings`, :class:`ModelSettings`,
:class:`MonitoringSettings` and :class:`SinkSettings`. A bad value is refused with one line
naming the setting (or its variable) and the value:

>>> RunSettings.replay(shards=0)
Traceback (most recent call last):
...
dataflows.settings.SettingsValueError: shards must be >= 1, got 0
>>> RunSettings.from_env({"RIVERLAKE_SHARDS": "two"})
Traceback (most recent call last):
...
dataflows.settings.SettingsValueError: RIVERLAKE_SHARDS must be int, got 'two'
>>> s = RunSettings.replay(model="linear,tree", stats_window="15m")
>>> s.models.model, s.monitoring.stats_window, s.source.shards
(('linear', 'tree'), '15m', 1)

Time-scale settings (``window``, ``grace``, ``label_ttl``, ``stats_window``,
``action_window``) default to ``"auto"``: a replay chooses them from its pinned history
(:mod:`dataflows.defaults`); a live run chooses them from the first messages on its topic
(:mod:`dataflows.live_defaults`), its windows never shorter than :data:`LIVE_AUTO`, which a
topic with too few messages at start takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from dataflows.defaults import AUTO

ENV_PREFIX = "RIVERLAKE_"
"""Every setting ``name`` is read from the variable ``RIVERLAKE_<NAME>``."""

LEGACY_ENV = {"RIVERLAKE_MODELS": "RIVERLAKE_MODEL"}
"""Variables read under an older name too (the new name wins)."""

LIVE_AUTO = {"window": "1d", "grace": "1d", "label_ttl": "7d", "stats_window": "1m", "action_window": 5_000}
"""A live run's ``"auto"`` where its topic's first messages cannot choose (:mod:`dataflows.live_defaults`); its
windows are never shorter."""

_OFF = ("", "none", "off")


class SettingsValueError(ValueError):
    """A setting refused: one line naming the setting (or its environment variable) and the value."""


def _names(value: object) -> object:
    """``"a, b"`` -> ``("a", "b")``; sequences as tuples; anything else unchanged (and refused by the type)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(value)
    return value


def _duration(value: object, *, auto: bool = False) -> object:
    """A duration as given (``"15m"``, ``"auto"`` where allowed; a number means seconds), checked; off -> ``None``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    if auto and isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    from lake.durations import parse_duration_us

    parse_duration_us(value)  # ValueError naming the grammar and the value
    return value.strip() if isinstance(value, str) else value


def _optional_text(value: object) -> object:
    return None if isinstance(value, str) and value.strip().lower() in _OFF else value


Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_names)]
"""A list of names: ``"a,b"`` or a sequence."""


def _detector_specs(value: object) -> object:
    """Detector specs split at commas outside parentheses (``"adwin(delta=0.01), page-hinkley"``)."""
    if isinstance(value, str | list | tuple):
        from monitoring.detectors import split_specs

        return tuple(s for s in split_specs(value) if s)
    return value


Specs = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_detector_specs)]
"""Detector specs: ``"adwin(delta=0.01), page-hinkley"`` or a sequence."""
Duration = Annotated[str | int | float | None, NoDecode, BeforeValidator(_duration)]
"""A duration (``"30s"``, ``"15m"``, ``"1d"``; numbers are seconds); ``None``/``"none"``: off or forever."""
AutoDuration = Annotated[str | int | float | None, NoDecode, BeforeValidator(partial(_duration, auto=True))]
"""A :data:`Duration` that may also be ``"auto"`` (chosen from the data)."""
Spec = Annotated[str | None, BeforeValidator(_optional_text)]
"""A spec string; ``None``/``""``/``"none"``: off."""


def setting(default: Any, doc: str, *, affects_results: bool = True, **constraints: Any) -> Any:
    """A settings field: its one default, its doc (the CLI help), whether it is part of the run identity."""
    return Field(default, description=doc, json_schema_extra={"affects_results": affects_results}, **constraints)


def affects_results(info: FieldInfo) -> bool:
    """Whether a field is part of the run identity (all are, unless declared otherwise)."""
    extra = info.json_schema_extra
    return not isinstance(extra, dict) or extra.get("affects_results", True) is not False


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (``os.environ`` by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        for old, new in LEGACY_ENV.items():
            if old in self._environ and new not in self._environ:
                self._environ[new] = self._environ[old]
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Group(BaseSettings):
    """One group of settings: frozen, validated, unknown names refused.

    Built from keyword arguments (``ModelSettings(seed=7)``), and from the environment only
    when asked (:meth:`build` with ``environ``, :meth:`RunSettings.from_env`): a group built
    from keywords never reads ``RIVERLAKE_*`` behind the caller's back.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True,
                                      env_ignore_empty=True, case_sensitive=False)
    concern: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        return (init_settings,) if environ is None else (init_settings, _Environ(settings_cls, environ))

    @classmethod
    def build(cls, values: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> Group:
        """The group from ``values`` (by field name), then ``environ``; a bad value is one line."""
        token = _ENVIRON.set(environ)
        try:
            return cls(**values)
        except ValidationError as ex:
            raise SettingsValueError(_one_line(ex, cls, values, environ)) from None
        finally:
            _ENVIRON.reset(token)

    @classmethod
    def env_var(cls, name: str) -> str:
        return f"{ENV_PREFIX}{name.upper()}"

    def identity(self) -> dict[str, Any]:
        """The fields that change what the run computes, as JSON-ready values."""
        data = self.model_dump(mode="json")
        return {name: data[name] for name, info in type(self).model_fields.items() if affects_results(info)}


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("riverlake_settings_environ", default=None)
"""The environment a group being built reads (``None``: keyword arguments only)."""


def _one_line(ex: ValidationError, cls: type[Group], values: Mapping[str, Any],
              environ: Mapping[str, str] | None) -> str:
    out = []
    for err in ex.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        from_env = environ is not None and name not in values
        label = cls.env_var(name) if from_env else name
        value = err.get("input")
        kind = err["type"]
        if kind in ("int_parsing", "int_type", "int_from_float"):
            out.append(f"{label} must be int, got {value!r}")
        elif kind in ("float_parsing", "float_type"):
            out.append(f"{label} must be float, got {value!r}")
        elif kind in ("bool_parsing", "bool_type"):
            out.append(f"{label} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}")
        elif kind == "literal_error":
            choices = cls.model_fields[name].annotation.__args__ if name in cls.model_fields else ()
            out.append(f"{label}: invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})")
        elif kind == "extra_forbidden":
            out.append(f"unknown setting {name!r} (known: {', '.join(sorted(cls.model_fields))})")
        elif kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
            op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
            bound = next(iter(err.get("ctx", {}).values()), "?")
            out.append(f"{label} must be {op} {bound}, got {value!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{label}: {msg}" if value is None or repr(value) in msg else f"{label}: {msg} (got {value!r})")
    return "; ".join(" ".join(line.split()) for line in out)


class ReplaySettings(Group):
    """Input of a replay: which Delta versions of ``events``/``labels``, split how, read how fast."""

    concern: ClassVar[str] = "replay"

    events_version: int | None = setting(None, "Delta version of events to replay (none: the latest)",
                                         affects_results=False, ge=0)  # pinned, in the identity itself
    labels_version: int | None = setting(None, "Delta version of labels (none: the latest)",
                                         affects_results=False, ge=0)
    shards: int = setting(1, "independent model copies, keyed by a stable hash of the entity key", ge=1)
    batch_size: int | None = setting(None, "items per replay batch (none: 10,000, or 2,000 when paced with rate)",
                                     affects_results=False, ge=1)  # resolved by the source, in the identity itself
    rate: float | None = setting(None, "pace the replay at this many items per second (demos, live-like runs)",
                                 affects_results=False, gt=0)
    balance: bool = setting(False, "place keys on shards by event counts (even shards), not CRC-32")


class LiveSettings(Group):
    """The live source: a Kafka topic of events and labels, and where served predictions go."""

    concern: ClassVar[str] = "live"

    brokers: str = setting("localhost:9092", "Kafka bootstrap servers", affects_results=False)
    topic: str = setting("events", "topic of events and labels (one shard per partition)",
                         affects_results=False)  # topic and partitions: in the identity itself
    predictions_topic: str | None = setting(None, "also send served predictions to this topic",
                                            affects_results=False)
    stop_at_end: bool = setting(False, "stop at the end of the topic instead of waiting for more",
                                affects_results=False)
    record: bool = setting(True, "append the received events and labels to the lake (replayable later)",
                           affects_results=False)
    kafka_config: dict[str, Any] | None = setting(None, "extra confluent-kafka settings (SASL, TLS, ...; JSON)",
                                                  affects_results=False)
    batch_size: int = setting(1_000, "messages per source batch", affects_results=False, ge=1)  # in the identity
    trace: str | None = setting(None, "file prefix recording when each batch was consumed, scored and sent",
                                affects_results=False)


    @field_validator("kafka_config", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):  # from the command line
            import json

            try:
                return json.loads(value) if value.strip() else None
            except json.JSONDecodeError as ex:
                raise ValueError(f"must be a JSON object ({ex.msg})") from None
        return value


class FeaturizerSettings(Group):
    """How payloads become features (:class:`dataflows.features.KeyedFeaturizer`)."""

    concern: ClassVar[str] = "featurizer"

    exclude: Names = setting((), "payload fields to drop")
    categorical: Names = setting((), "payload fields to one-hot even when numeric")
    hash_fields: Names = setting((), "text fields (e.g. url) split into tokens hashed into n_buckets indicators")
    n_buckets: int = setting(2**20, "hash space of hash_fields tokens: bounds the model's weights", ge=2)

    def featurizer_kwargs(self, *, per_key: bool) -> dict[str, Any]:
        """The featurizer's keyword arguments (JSON-ready: lists, sorted)."""
        out: dict[str, Any] = {"exclude": sorted(self.exclude), "categorical": sorted(self.categorical)}
        if self.hash_fields:
            out.update(hash_fields=sorted(self.hash_fields), n_buckets=self.n_buckets)
        if per_key:
            out["shared_prior"] = False  # a key's features from its own events: shard-independent
        return out


class ModelSettings(Group):
    """The models and how they are scored, checkpointed and watched for drift on their errors."""

    concern: ClassVar[str] = "models"

    task: Literal["auto", "binary", "multiclass", "regression"] = setting(
        AUTO, "the learning task (auto: the lake's, lake.tasks.read_task; binary before any label); another than "
              "the lake's is refused")
    model: Names = setting(("linear",), "model specs, champion first, challengers after (e.g. linear,tree)")
    seed: int = setting(42, "seed of every model and detector")
    checkpoint_every: int = setting(10_000, "learns between model checkpoints", ge=1)
    threshold: float = setting(0.5, "decision threshold on the score", gt=0.0, lt=1.0)
    window: AutoDuration = setting(AUTO, "prequential metric windows, e.g. 1d (auto: replay chooses from the "
                                         f"data, live from the topic's first messages, at least {LIVE_AUTO['window']})")
    grace: AutoDuration = setting(AUTO, "how long after a window's end late labels still count (auto: the longest "
                                        f"observed label delay; live: so, or {LIVE_AUTO['grace']})")
    label_ttl: AutoDuration = setting(AUTO, "give up waiting for a label this long after its event; none: wait "
                                            "forever (auto: the 99.9th percentile of observed label delays; live: "
                                            f"so, or {LIVE_AUTO['label_ttl']} when its first messages cannot tell)")
    drift: Specs = setting(("adwin",), "detectors on every model's error stream (empty: none)")
    per_key: bool = setting(False, "one model per event key (route, carrier, host) instead of one per shard")
    max_key_models: int = setting(100_000, "with per_key: keys with a model kept per shard and model", ge=1)

    @field_validator("model")
    @classmethod
    def _known_models(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        from dataflows.models import get_spec

        if not value:
            raise ValueError("name at least one model spec")
        if len(set(value)) != len(value):
            raise ValueError(f"models must be distinct, got {','.join(value)!r}")
        from dataflows.models import TASK_SPECS

        task = info.data.get("task", AUTO)
        for name in value:  # auto: a name of any task here; checked against the lake's task at start
            if task != AUTO or not any(name in specs for specs in TASK_SPECS.values()):
                get_spec(name, task="binary" if task == AUTO else task)
        return value

    @field_validator("drift")
    @classmethod
    def _known_detectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from monitoring.error_drift import make_detector

        for spec in value:
            make_detector(spec)  # names the known detectors
        return value

    @field_validator("drift")
    @classmethod
    def _detectors_fit_task(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        from monitoring.detectors import DETECTORS, parse_spec

        binary = [s for s in value if DETECTORS[parse_spec(s)[0]].binary]
        if info.data.get("task") == "regression" and binary:
            raise ValueError(f"detector {binary[0]!r} takes 0/1 errors; a regression's error stream is the "
                             "absolute error (use adwin, page-hinkley or kswin)")
        return value

    @field_validator("per_key")
    @classmethod
    def _per_key_fits_task(cls, value: bool, info: Any) -> bool:
        if value and info.data.get("task") == "regression":
            raise ValueError("per-key models serve classes (binary, multiclass), not a regression")
        return value


class MonitoringSettings(Group):
    """Label-free monitoring and drift actions (:class:`monitoring.stream.MonitorConfig`)."""

    concern: ClassVar[str] = "monitoring"

    stats_window: AutoDuration = setting(AUTO, "window statistics' tumbling window; none: off (auto: from the "
                                               f"data; live: at least {LIVE_AUTO['stats_window']})")
    lateness: Duration = setting("0s", "watermark lag behind the latest event time")
    anomaly: Spec = setting("zscore", "anomaly scorer spec: zscore, hst, ... (none: off)")
    watch: Spec = setting(None, "label-free detectors on the champion, e.g. 'feature:x=adwin; new_features=adwin'")
    drift_action: Literal["none", "reset", "retrain"] = setting("none", "what to do with a model whose error "
                                                                        "detector alarmed")
    action_window: int | Literal["auto"] = setting(AUTO, "recent labelled events to retrain from; least learns "
                                                         "between two actions (auto: a tenth of the labels, "
                                                         f"100..5,000; live {LIVE_AUTO['action_window']:,})")

    @field_validator("anomaly", "watch")
    @classmethod
    def _known_specs(cls, value: str | None, info: Any) -> str | None:
        from monitoring.stream import MonitorConfig

        if value is not None:  # the monitor's own checks: known scorers, detectors and label-free signals
            MonitorConfig(stats_window_us=None, anomaly=value if info.field_name == "anomaly" else None,
                          watch=value if info.field_name == "watch" else None)
        return value

    @field_validator("action_window", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() != AUTO:
            try:
                return int(value)
            except ValueError:
                raise ValueError("must be a number of labelled events or 'auto'") from None
        return value


class SinkSettings(Group):
    """Where the run's rows go and how they are written; none of it changes a row."""

    concern: ClassVar[str] = "sinks"

    lake: str = setting("lakehouse", "the lake root (a folder or an s3://... URI)", affects_results=False)
    run_id: str | None = setting(None, "the run's id (none: derived from the inputs and settings)",
                                 affects_results=False)
    flush_rows: int = setting(25_000, "rows buffered before a Delta commit", affects_results=False, ge=1)
    flush_seconds: float = setting(5.0, "seconds between Delta commits at most", affects_results=False, gt=0)
    control_interval_s: float = setting(2.0, "seconds between the running flow's looks for a new champion "
                                             "(0: at every batch)", affects_results=False, ge=0)
    colocate: bool = setting(False, "learn each shard inside its source partition (nothing crosses workers)",
                             affects_results=False)


GROUPS: dict[str, type[Group]] = {"featurizer": FeaturizerSettings, "models": ModelSettings,
                                  "monitoring": MonitoringSettings, "sinks": SinkSettings}
"""The groups every run has, by attribute of :class:`RunSettings`."""
SOURCES: dict[str, type[Group]] = {"replay": ReplaySettings, "live": LiveSettings}
"""The source group of each kind of run."""


def group_classes(kind: Literal["replay", "live"]) -> dict[str, type[Group]]:
    """``{"source": ..., "featurizer": ..., ...}``: the groups of a run of ``kind``."""
    return {"source": SOURCES[kind], **GROUPS}


def field_names(kind: Literal["replay", "live"]) -> dict[str, str]:
    """Every setting of a run of ``kind`` -> its group's attribute (names are unique across groups)."""
    out: dict[str, str] = {}
    for attr, cls in group_classes(kind).items():
        for name in cls.model_fields:
            if name in out:
                raise TypeError(f"setting {name!r} is in two groups: {out[name]} and {attr}")
            out[name] = attr
    return out


@dataclass(frozen=True)
class RunSettings:
    """All settings of one run, one frozen group per concern."""

    kind: Literal["replay", "live"]
    source: Group
    featurizer: FeaturizerSettings
    models: ModelSettings
    monitoring: MonitoringSettings
    sinks: SinkSettings

    @classmethod
    def build(cls, kind: Literal["replay", "live"], values: Mapping[str, Any] | None = None, *,
              environ: Mapping[str, str] | None = None) -> RunSettings:
        """From flat ``values`` by setting name, then ``environ`` when given (``None`` is a value:
        ``label_ttl=None`` waits forever; leave a setting out for its default)."""
        values = dict(values or {})
        owner = field_names(kind)
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise SettingsValueError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                                     f"{', '.join(map(repr, unknown))} for a {kind} run")
        groups = {attr: g.build({k: v for k, v in values.items() if owner[k] == attr}, environ=environ)
                  for attr, g in group_classes(kind).items()}
        return cls(kind=kind, **groups)

    @classmethod
    def replay(cls, **values: Any) -> RunSettings:
        """A replay's settings from keyword arguments."""
        return cls.build("replay", values)

    @classmethod
    def live(cls, **values: Any) -> RunSettings:
        """A live run's settings from keyword arguments."""
        return cls.build("live", values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, kind: Literal["replay", "live"] = "replay",
                 **values: Any) -> RunSettings:
        """From ``RIVERLAKE_*`` variables (``os.environ`` by default); ``values`` win over them."""
        return cls.build(kind, values, environ=os.environ if environ is None else environ)

    def groups(self) -> dict[str, Group]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}

    def values(self) -> dict[str, Any]:
        """Every setting by name (the keyword arguments that rebuild these settings)."""
        return {k: v for g in self.groups().values() for k, v in g.model_dump().items()}

    def update(self, **values: Any) -> RunSettings:
        """A copy with some settings changed (validated again)."""
        if not values:
            return self
        return RunSettings.build(self.kind, {**self.values(), **values})

    def resolved(self, **values: Any) -> RunSettings:
        """A copy with values chosen at start (``"auto"`` time scales) filled in; ``None`` values are kept."""
        owner = field_names(self.kind)
        changes: dict[str, dict[str, Any]] = {}
        for k, v in values.items():
            changes.setdefault(owner[k], {})[k] = v
        return replace(self, **{attr: getattr(self, attr).model_copy(update=upd) for attr, upd in changes.items()})

    def with_lake_task(self) -> RunSettings:
        """These settings with ``task`` set to the lake's (:func:`lake.tasks.read_task`); a lake without labels
        takes the task given (auto: binary). A task given that is not the lake's is refused in one line."""
        from lake.tasks import read_task

        found = read_task(self.sinks.lake)
        given = self.models.task
        lake_task = found.name if found is not None else "binary" if given == AUTO else given
        if given not in (AUTO, lake_task):
            raise SettingsValueError(f"task {given!r} is not the lake's: {self.sinks.lake} holds a {lake_task} task"
                                     f"{'' if found is None else f' ({found.reason})'}")
        return self if given == lake_task else self.update(task=lake_task)

    def identity(self) -> dict[str, Any]:
        """The run-identity settings: every field that changes results (see :func:`affects_results`), by name."""
        return {k: v for group in self.groups().values() for k, v in group.identity().items()}

    def monitor_config(self) -> Any:
        """The monitoring settings as :class:`~monitoring.stream.MonitorConfig` (time scales resolved)."""
        from monitoring.stream import MonitorConfig

        m = self.monitoring
        return MonitorConfig.from_settings(stats_window=m.stats_window, lateness=m.lateness, anomaly=m.anomaly,
                                           watch=m.watch, drift_action=m.drift_action,
                                           action_window=int(m.action_window) if m.action_window != AUTO else 5_000)

    def run_config(self, run_id: str) -> Any:
        """The learner's :class:`~dataflows.learner.RunConfig`, built here and nowhere else."""
        from dataflows.learner import RunConfig
        from lake.durations import parse_duration_us

        md = self.models
        ttl = None if md.label_ttl is None else parse_duration_us(md.label_ttl)
        return RunConfig(run_id=run_id, task="binary" if md.task == AUTO else md.task, models=md.model,
                         seed=md.seed, checkpoint_every=md.checkpoint_every,
                         window_us=parse_duration_us(md.window), grace_us=parse_duration_us(md.grace),
                         threshold=md.threshold, featurizer=self.featurizer.featurizer_kwargs(per_key=md.per_key),
                         label_ttl_us=ttl, drift_detectors=md.drift, monitor=self.monitor_config(),
                         per_key=md.per_key, max_key_models=md.max_key_models)


def settings_of(kind: Literal["replay", "live"], settings: RunSettings | None, values: Mapping[str, Any]
                ) -> RunSettings:
    """``settings`` updated with ``values``, or built from ``values`` alone (the flows' keyword forms)."""
    if settings is None:
        return RunSettings.build(kind, values)
    if settings.kind != kind:
        raise SettingsValueError(f"these settings are for a {settings.kind} run, not a {kind} run")
    return settings.update(**values)


def fields_of(kind: Literal["replay", "live"]) -> Sequence[tuple[str, FieldInfo, type[Group]]]:
    """Every setting of a run of ``kind``: (name, field, group class), in group order (the CLI's options)."""
    return [(name, info, cls) for cls in group_classes(kind).values() for name, info in cls.model_fields.items()]
