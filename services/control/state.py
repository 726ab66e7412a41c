"""The control service's state machine, shown by ``sunbeam-ctl status``.

    Starting ──► Registering ──► Running ──► Reconnecting ──► Registering ...
        │             │   ▲    │        │              │
        │             ▼   │    ▼        │              │
        │           NeedsLogin ◄────────┘ (our node key expired, or logged out)
        │             │
        └─────────────┴──────┬─────────────────────────┘
                             ▼
                     Error(reason)   (the user must fix something: no automatic retry)
    any state ──► Stopped            (shutdown)

``Reconnecting`` carries the reason of the last failure; ``Error`` the reason to fix.
``NeedsLogin``: the server waits for an admin to register us at ``ControlStatus.auth_url``
(the long poll is open), or, without a URL, the node key expired or we logged out and the
service waits for ``sunbeam-ctl login`` (login.py).
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    STARTING = "Starting"
    REGISTERING = "Registering"
    RUNNING = "Running"
    RECONNECTING = "Reconnecting"
    NEEDS_LOGIN = "NeedsLogin"
    ERROR = "Error"
    STOPPED = "Stopped"


ALLOWED: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.REGISTERING, State.RECONNECTING, State.ERROR, State.STOPPED}),
    State.REGISTERING: frozenset({State.RUNNING, State.RECONNECTING, State.NEEDS_LOGIN, State.ERROR, State.STOPPED}),
    State.RUNNING: frozenset({State.RECONNECTING, State.NEEDS_LOGIN, State.ERROR, State.STOPPED, State.RUNNING}),
    State.NEEDS_LOGIN: frozenset({State.REGISTERING, State.RUNNING, State.RECONNECTING, State.ERROR,
                                  State.STOPPED}),
    State.RECONNECTING: frozenset({State.REGISTERING, State.RECONNECTING, State.NEEDS_LOGIN, State.ERROR,
                                   State.STOPPED}),
    State.ERROR: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}


def check_transition(old: State, new: State) -> None:
    """Our own bug if violated: raise (the service crashes loudly and is restarted)."""
    if new is not old and new not in ALLOWED[old]:
        raise AssertionError(f"control state {old.value} -> {new.value} is not allowed")
