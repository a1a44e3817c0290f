"""The flows' one retry policy: Prefect's task retries with :func:`prefect.tasks.exponential_backoff`,
for I/O only (MLflow, object storage) where a step can also fail for reasons a retry cannot fix.

>>> retry_options(3, 2.0)["retry_delay_seconds"]
[2.0, 4.0, 8.0]
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff


def is_io_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` is worth retrying: I/O, connection or database errors (also wrapped by MLflow)."""
    seen = 0
    while exc is not None and seen < 8:
        names = {c.__name__ for c in type(exc).__mro__}
        if names & {"OSError", "ConnectionError", "TimeoutError", "OperationalError", "RequestException"}:
            return True
        if "MlflowException" in names and getattr(exc, "error_code", "") in (
                "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "IO_ERROR"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only when it failed on I/O."""
    data = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_io_error(data if isinstance(data, BaseException) else None)


def retry_options(retries: int = 3, first_delay_s: float = 2.0, *, only_io: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``@task(...)`` / ``task.with_options(...)``: ``retries`` tries more,
    waiting ``first_delay_s`` and doubling (Prefect's exponential backoff); with ``only_io``, a
    failure that is not I/O (:func:`is_io_error`) is not retried."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if first_delay_s < 0:
        raise ValueError(f"retry delay must be >= 0 s, got {first_delay_s!r}")
    options: dict[str, Any] = {"retries": retries,
                               "retry_delay_seconds": exponential_backoff(backoff_factor=first_delay_s)(retries)}
    if only_io:
        options["retry_condition_fn"] = retry_on_io
    return options
