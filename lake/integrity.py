"""Integrity of pickled bytes: an HMAC with a key the lake does not hold.

Checkpoints, recovery snapshots and logged MLflow models carry pickled River
models, and unpickling runs whatever code the pickle names. A sha256 stored
beside the bytes proves nothing to someone who can rewrite both; an HMAC-SHA256
with a secret key kept outside the lake does: whoever can write the lake but
not read the key cannot make bytes that pass :func:`verify`. Every unpickle of
bytes read from the lake, a snapshot or the MLflow store goes through
:func:`loads`, which checks the tag first.

The key (32 random bytes, as 64 hex digits):

- ``$RIVERLAKE_KEY`` (hex), if set; else
- the file ``$RIVERLAKE_KEY_FILE``, if set (it must exist: a missing shared key
  is an error, never replaced by a new one); else
- the default file ``$XDG_CONFIG_HOME/riverlake/key`` (``~/.config/riverlake/key``),
  created with mode 0600 the first time something is signed on this machine,
  with one line on stderr saying so.

A key file inside the lake it protects is refused (:func:`key` with ``lake``).
Each tag is bound to a purpose (what the bytes are and whose: a checkpoint id,
a run's recovery state), so bytes signed for one place do not pass in another.

>>> import os; os.environ["RIVERLAKE_KEY"] = "00" * 32
>>> tag = sign(b"data", purpose="checkpoint r1/linear:s0:0")
>>> verify(b"data", tag, purpose="checkpoint r1/linear:s0:0", what="checkpoint 'linear:s0:0'")
>>> verify(b"data", tag, purpose="checkpoint r1/linear:s0:1", what="checkpoint 'linear:s0:1'")
Traceback (most recent call last):
...
lake.integrity.IntegrityError: checkpoint 'linear:s0:1': HMAC does not match ...
>>> del os.environ["RIVERLAKE_KEY"]

This module imports only the standard library (and :mod:`lake.errors` where it
exists): MLflow models are logged with a copy of it, to check their bytes where
riverlake is not installed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any

try:
    from lake.errors import LakeError
except ImportError:  # the copy logged with an MLflow model, where riverlake is not installed
    LakeError = Exception  # type: ignore[misc,assignment]

KEY_ENV = "RIVERLAKE_KEY"
KEY_FILE_ENV = "RIVERLAKE_KEY_FILE"
KEY_BYTES = 32
_MIN_KEY_BYTES = 16


class IntegrityError(LakeError):
    """Bytes could not be proven to come from a holder of the key; they are not unpickled."""


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/riverlake/key``, else ``~/.config/riverlake/key``."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "riverlake" / "key"


def key_source() -> str:
    """Where the key comes from, for messages: the variable or the file."""
    if os.environ.get(KEY_ENV):
        return f"${KEY_ENV}"
    return str(_key_file())


def _key_file() -> Path:
    explicit = os.environ.get(KEY_FILE_ENV)
    return Path(explicit).expanduser().absolute() if explicit else default_key_file()


def _parse(text: str, where: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise IntegrityError(f"riverlake key in {where} is not hex digits; make one with "
                             f"`python -c \"import secrets; print(secrets.token_hex({KEY_BYTES}))\"`") from None
    if len(raw) < _MIN_KEY_BYTES:
        raise IntegrityError(f"riverlake key in {where} has {len(raw)} bytes, at least {_MIN_KEY_BYTES} needed "
                             f"(use {KEY_BYTES} random bytes: 64 hex digits)")
    return raw


def _create(path: Path) -> bytes:
    """Write a new random key at ``path`` (0600), unless another process just did; returns the key there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        os.link(tmp, path)  # atomic: the first of several processes wins, the others read its key
        print(f"riverlake: created a new integrity key at {path}; every machine that reads this "
              f"machine's lake, recovery state or MLflow models needs a copy of it (or ${KEY_ENV})",
              file=sys.stderr)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _parse(path.read_text(), str(path))


def _inside(path: Path, lake: str | os.PathLike[str]) -> bool:
    root = os.fspath(lake)
    if "://" in root and not root.startswith("file://"):
        return False  # an object store: a local key file cannot be in it
    if root.startswith("file://"):
        root = root[len("file://"):]
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def key(*, create: bool = False, lake: str | os.PathLike[str] | None = None) -> bytes:
    """The riverlake key (see the module docstring); ``create`` makes the default key file if missing.

    With ``lake``, a key file inside that lake is refused: whoever writes the lake could read it.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return _parse(env, f"${KEY_ENV}")
    path = _key_file()
    if lake is not None and _inside(path, lake):
        raise IntegrityError(f"riverlake key file {path} is inside the lake {os.fspath(lake)!r}: whoever can "
                             f"write the lake could read it; move it out and point ${KEY_FILE_ENV} at it")
    try:
        return _parse(path.read_text(), str(path))
    except FileNotFoundError:
        pass
    if os.environ.get(KEY_FILE_ENV):
        raise IntegrityError(f"riverlake key file {path} (${KEY_FILE_ENV}) does not exist: copy the key of the "
                             f"machines that write the lake there, or set ${KEY_ENV}")
    if not create:
        raise IntegrityError(f"no riverlake key on this machine ({path} does not exist, ${KEY_ENV} is unset): "
                             "copy the key of the machine that wrote this data there, or set "
                             f"${KEY_ENV} or ${KEY_FILE_ENV}")
    return _create(path)


def sign(data: bytes, *, purpose: str) -> str:
    """The HMAC-SHA256 (hex) of ``data`` for ``purpose``, with the key (created on first use if default)."""
    return _mac(key(create=True), data, purpose)


def _mac(secret: bytes, data: bytes, purpose: str) -> str:
    mac = hmac.new(secret, purpose.encode() + b"\x00", hashlib.sha256)
    mac.update(data)
    return mac.hexdigest()


def verify(data: bytes, tag: str | None, *, purpose: str, what: str) -> None:
    """Raise :class:`IntegrityError` unless ``tag`` is the HMAC of ``data`` for ``purpose``.

    ``what`` names the bytes in the message (``"checkpoint 'linear:s0:0' of run 'r1'"``).
    """
    if not tag:
        raise IntegrityError(f"{what}: no HMAC recorded (written before riverlake signed its pickles, or "
                             "stripped); refusing to unpickle it. Write it again (rerun, or re-register) "
                             "with the key")
    expected = _mac(key(), data, purpose)
    if not hmac.compare_digest(expected, str(tag)):
        raise IntegrityError(f"{what}: HMAC does not match the key from {key_source()}: the bytes were "
                             "changed by someone without the key, or written with another key; refusing "
                             "to unpickle them")


def loads(data: bytes, tag: str | None, *, purpose: str, what: str) -> Any:
    """Unpickle ``data`` once :func:`verify` proved it was signed for ``purpose``."""
    verify(data, tag, purpose=purpose, what=what)
    return pickle.loads(data)  # verified above


def checkpoint_purpose(run_id: str, checkpoint_id: str) -> str:
    """What a checkpoint's tag is bound to: its run and id (a row's bytes do not pass in another row)."""
    return f"checkpoint {run_id}/{checkpoint_id}"


def _checkpoint_message(model_bytes: bytes, featurizer_bytes: bytes | None, run_id: str,
                        checkpoint_id: str) -> tuple[bytes, str]:
    """What a checkpoint's tag covers, and the purpose it is bound to: the model bytes alone (checkpoints
    without featurizer state, as all were before it was kept), else both, length-framed and bound to a
    purpose of their own, so neither part can be moved into the other nor the state be dropped."""
    purpose = checkpoint_purpose(run_id, checkpoint_id)
    if featurizer_bytes is None:
        return model_bytes, purpose
    return len(model_bytes).to_bytes(8, "big") + model_bytes + featurizer_bytes, purpose + " with featurizer state"


def sign_checkpoint(model_bytes: bytes, featurizer_bytes: bytes | None = None, *, run_id: str,
                    checkpoint_id: str) -> str:
    """The tag of a checkpoint's model bytes and (where it keeps it) the featurizer state it predicted with."""
    data, purpose = _checkpoint_message(model_bytes, featurizer_bytes, run_id, checkpoint_id)
    return sign(data, purpose=purpose)


def verify_checkpoint(model_bytes: bytes, featurizer_bytes: bytes | None, tag: str | None, *, run_id: str,
                      checkpoint_id: str, what: str) -> None:
    """Raise :class:`IntegrityError` unless ``tag`` is :func:`sign_checkpoint`'s of these bytes."""
    data, purpose = _checkpoint_message(model_bytes, featurizer_bytes, run_id, checkpoint_id)
    verify(data, tag, purpose=purpose, what=what)


RECOVERY_PURPOSE = "recovery state"
"""What sealed recovery state is bound to. Not to the run id: a genuine snapshot of another run (a folder
reused, or moved by someone without the key) unpickles safely and is then refused by the run's own check
of its recorded settings (``dataflows.online.check_resumed``), whose message names the run and the settings."""


def seal(data: bytes, *, purpose: str) -> tuple[str, bytes]:
    """``(tag, data)``: pickled state as a snapshot carries it (see :func:`unseal`)."""
    return sign(data, purpose=purpose), data


def unseal(sealed: Any, *, purpose: str, what: str) -> Any:
    """The object in a :func:`seal`-ed snapshot, unpickled only once its tag checked out."""
    if not (isinstance(sealed, tuple) and len(sealed) == 2 and isinstance(sealed[0], str)
            and isinstance(sealed[1], bytes)):
        raise IntegrityError(f"{what}: not sealed with an HMAC (written by an older riverlake, or "
                             "replaced); refusing to unpickle it. Delete the recovery folder to start the run over")
    return loads(sealed[1], sealed[0], purpose=purpose, what=what)


class _PlainData(pickle.Unpickler):
    """Unpickles numbers, strings, bytes and containers of them; refuses every class and function."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("holds a persistent id")


def check_plain(data: bytes, *, what: str) -> None:
    """Raise :class:`IntegrityError` unless ``data`` unpickles to plain data (no class, no function).

    Nothing the pickle names is imported or called: a refused pickle has had no effect.
    """
    try:
        _PlainData(io.BytesIO(data)).load()
    except Exception as ex:  # any malformed or refused pickle
        raise IntegrityError(f"{what}: {ex}; only plain data may be there (riverlake's state is bytes sealed "
                             "with an HMAC): refusing to resume from it") from None


def check_recovery(db_dir: str | os.PathLike[str]) -> int:
    """Check every snapshot in a Bytewax recovery folder before Bytewax unpickles them; returns how many.

    Bytewax 0.21 keeps snapshots as pickles in the ``snaps`` table (``ser_change``) of
    ``part-*.sqlite3`` files and unpickles them itself on resume. riverlake's
    snapshots are plain data (positions, ``None``, sealed learner bytes), so a
    snapshot that names any class or function was not written by riverlake:
    :class:`IntegrityError`, and nothing resumes.
    """
    n = 0
    for part in sorted(Path(db_dir).glob("*.sqlite3")):
        conn = sqlite3.connect(f"{part.resolve().as_uri()}?mode=ro", uri=True)  # read only
        try:
            rows = conn.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps "
                                "WHERE ser_change IS NOT NULL")
            for step, state_key, epoch, blob in rows:
                check_plain(bytes(blob), what=f"recovery snapshot of step {step!r}, key {state_key!r}, "
                                              f"epoch {epoch} in {part}")
                n += 1
        finally:
            conn.close()
    return n
