"""The actor runtime every sunbeam service runs on: runtime directory and ipc endpoints,
stale-socket handling, the shutdown flag, the service loop and its timers, structured
logging, counters and packet batching. See each module's docstring."""

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
from .stale import AlreadyRunning, NotASocket, OwnedSocketFiles, SocketState, probe, remove_stale
from .timers import TimerHandle, TimerHeap

__all__ = [
    "AlreadyRunning",
    "Batcher",
    "Counters",
    "EncodedBatch",
    "JsonFormatter",
    "MAX_SOCKET_PATH_BYTES",
    "NotASocket",
    "OwnedSocketFiles",
    "REDACTED",
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
