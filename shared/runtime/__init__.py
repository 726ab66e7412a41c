"""The actor runtime every sunbeam service runs on: runtime directory and ipc endpoints,
stale-socket handling, the shutdown flag, the service loop and its timers, structured
logging, counters and packet batching. See each module's docstring.

The names below are loaded on first use (PEP 562): ``from sunbeam.shared.runtime import
Secret`` imports ``runtime.secret`` alone, not zmq, msgspec and the loop as well, so a
process that needs one small piece (the config's `Secret`, the ctl's socket probe) does
not pay ~35 ms of imports for the rest. The type checker reads the imports as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# export -> the submodule that defines it
_WHERE = {
    "Batcher": "batching", "EncodedBatch": "batching", "send_bounded": "batching",
    "Counters": "counters",
    "JsonFormatter": "log", "RateLimitedLog": "log", "StructLogger": "log", "get_logger": "log",
    "ServiceLoop": "loop", "decoding_handler": "loop",
    "MAX_SOCKET_PATH_BYTES": "rundir", "RundirError": "rundir", "SocketPathTooLong": "rundir",
    "endpoint": "rundir", "ensure_rundir": "rundir", "ipc_path": "rundir", "socket_path": "rundir",
    "REDACTED": "secret", "Secret": "secret",
    "Shutdown": "shutdown",
    "AlreadyRunning": "stale", "NotASocket": "stale", "OwnedSocketFiles": "stale", "SocketState": "stale",
    "probe": "stale", "remove_stale": "stale",
    "TimerHandle": "timers", "TimerHeap": "timers",
}

if TYPE_CHECKING:
    from .batching import Batcher, EncodedBatch, send_bounded
    from .counters import Counters
    from .log import JsonFormatter, RateLimitedLog, StructLogger, get_logger
    from .loop import ServiceLoop, decoding_handler
    from .rundir import (
        MAX_SOCKET_PATH_BYTES,
        RundirError,
        SocketPathTooLong,
        endpoint,
        ensure_rundir,
        ipc_path,
        socket_path,
    )
    from .secret import REDACTED, Secret
    from .shutdown import Shutdown
    from .stale import (
        AlreadyRunning,
        NotASocket,
        OwnedSocketFiles,
        SocketState,
        probe,
        remove_stale,
    )
    from .timers import TimerHandle, TimerHeap
else:
    # only at run time: a module-level __getattr__ seen by the type checker would make
    # every misspelt name from this package type-check (as Any)

    def __getattr__(name: str) -> Any:
        where = _WHERE.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{where}", __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})

__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "REDACTED",
    "AlreadyRunning",
    "Batcher",
    "Counters",
    "EncodedBatch",
    "JsonFormatter",
    "NotASocket",
    "OwnedSocketFiles",
    "RateLimitedLog",
    "RundirError",
    "Secret",
    "ServiceLoop",
    "Shutdown",
    "SocketPathTooLong",
    "SocketState",
    "StructLogger",
    "TimerHandle",
    "TimerHeap",
    "decoding_handler",
    "endpoint",
    "ensure_rundir",
    "get_logger",
    "ipc_path",
    "probe",
    "remove_stale",
    "send_bounded",
    "socket_path",
]
