"""Several views driven as one: the supervisor calls start/refresh/close on one object."""

from __future__ import annotations

from typing import Any


class Tee:
    """Forwards every view call to each view, in order (the user's view first: its summary is
    printed before a recorder writes its last snapshot)."""

    def __init__(self, *views: Any) -> None:
        self.views = views

    def start(self) -> None:
        for v in self.views:
            v.start()

    def refresh(self) -> None:
        for v in self.views:
            v.refresh()

    def event(self, kind: str, **fields: Any) -> None:
        for v in self.views:
            v.event(kind, **fields)

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        for v in self.views:
            v.log(node, replica, stream, line)

    def close(self) -> None:
        for v in self.views:
            v.close()
