"""What goes wrong inside a replica, as the exceptions main.py turns into a report and an exit."""

from __future__ import annotations

from typing import Any


class Stop(BaseException):
    """Raised out of blocking calls when the replica must stop now (SIGTERM).

    A BaseException, so `except Exception` in the user's code cannot swallow it.
    """


class DecodeError(ValueError):
    """A received frame that the socket's codec cannot turn into records."""


class NodeFailure(Exception):
    """Reported as `fatal {phase, message, **extra}`; the phase decides the exit code
    (protocol.exit_code_for)."""

    def __init__(self, phase: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.phase = phase
        self.extra = extra
