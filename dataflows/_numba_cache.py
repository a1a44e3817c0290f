"""Loading the compiled loops from numba's cache without numba's compile-time set-up.

``Dispatcher.compile`` asks its cache for the machine code of a signature, and numba's cache first
refreshes the target context: it installs every typing and lowering registry numba has (and imports
the modules that declare them), ~0.2 CPU s once per process, which only *compiling* needs. Loading
cached machine code needs the runtime (NRT) the code links against and the code itself. So the
dispatchers given to :func:`load_lightly` load their cached signatures after only
:meth:`NRT.initialize`; a signature the cache does not hold is compiled as always (numba's compiler
refreshes the contexts itself), and a load that fails any other way goes numba's own way.
"""

from __future__ import annotations

from typing import Any


def load_lightly(*dispatchers: Any) -> None:
    """Let each numba dispatcher (``cache=True``) load its cached signatures without the registries'
    refresh. Where numba's cache does not look as expected, the dispatcher is left as it is."""
    from numba.core.runtime import nrt

    for dispatcher in dispatchers:
        cache = getattr(dispatcher, "_cache", None)
        full = getattr(cache, "load_overload", None)
        load = getattr(cache, "_load_overload", None)
        if full is None or load is None:
            continue

        def light(sig: Any, target_context: Any, *, _full: Any = full, _load: Any = load) -> Any:
            try:
                nrt.rtsys.initialize(target_context)
                return _load(sig, target_context)
            except Exception:  # noqa: BLE001 - any surprise: numba's own load (refresh included)
                return _full(sig, target_context)

        cache.load_overload = light
