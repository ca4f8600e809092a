"""Restart policy: whether a replica that failed gets another incarnation, and after how long.

Pure arithmetic over the times of past restarts, so the crash-loop rule is tested without any
process: `max_restarts` restarts within `restart_window` seconds and the next failure is a crash
loop; otherwise the delay doubles from `backoff.initial` up to `backoff.max`.
"""

from __future__ import annotations

from zflow.records import record


@record(frozen=True)
class RestartPolicy:
    mode: str  # "no" | "on-failure" | "always"
    max_restarts: int
    window: float
    initial: float
    max_delay: float

    @classmethod
    def of(cls, node: object) -> RestartPolicy:
        """From a plan.NodePlan."""
        return cls(
            mode=node.restart, max_restarts=node.max_restarts,  # type: ignore[attr-defined]
            window=node.restart_window, initial=node.backoff_initial,  # type: ignore[attr-defined]
            max_delay=node.backoff_max,  # type: ignore[attr-defined]
        )


@record(frozen=True)
class Verdict:
    """`delay` before the next incarnation, or `crash_loop` (then `failures` says how many)."""

    delay: float | None
    crash_loop: bool
    failures: int


def next_restart(policy: RestartPolicy, history: list[float], now: float) -> Verdict:
    """Decide, and update `history` (the slot's restart times) in place when a restart is due."""
    history[:] = [t for t in history if now - t < policy.window]
    if len(history) >= policy.max_restarts:
        return Verdict(None, True, len(history) + 1)
    delay = min(policy.max_delay, policy.initial * (2 ** len(history)))
    history.append(now)
    return Verdict(delay, False, len(history))
