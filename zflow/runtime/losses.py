"""What did not make it: records lost, skipped or dead-lettered, counted where zflow can count.

Each count group knows what its senders sent and its receivers got (streams.py); a replica that
dies is charged with what it had taken from a count-group input and not yet sent on. The signed
sum is the number of records lost. A killed replica's last report can lag its real counts, so the
split between places is approximate, but the lags cancel in the sum: for transforms that return
one record per record the total is exact (tests/test_reliability.py compares it with what the
sink is missing). Records that raised and were skipped or dead-lettered are counted apart.
A command node that dies mid-stream is opaque: what it held cannot be counted, so the run cannot
say it is complete (`uncounted`: incomplete, exit 4, naming the replica).
"""

from __future__ import annotations

from typing import Any

from zflow.plan import END_COUNT, Plan
from zflow.records import field, record
from zflow.runtime.slots import Slot
from zflow.runtime.streams import CountGroup


@record
class Verdict:
    lost: int
    skipped: int
    places: list[str] = field(default_factory=list)
    #: the places' positive parts do not add up to `lost` (late counts of killed replicas)
    approximate: bool = False
    #: command replicas that died mid-stream: records may have been lost inside them, uncounted
    uncounted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"lost": self.lost, "places": self.places, "skipped": self.skipped,
                "uncounted": self.uncounted}

    def message(self) -> str | None:
        """`incomplete: …` for the summary, or None when nothing was lost or skipped."""
        parts = []
        if self.lost:
            parts.append(f"{self.lost} record{'s' if self.lost != 1 else ''} lost")
        if self.skipped:
            one = self.skipped == 1
            parts.append(f"{self.skipped} record{'' if one else 's'} failed and "
                         f"{'was' if one else 'were'} skipped or dead-lettered (on_error)")
        if self.uncounted:
            parts.append(f"records may have been lost inside {', '.join(self.uncounted)} "
                         "(command nodes that died mid-stream: zflow cannot count inside them)")
        if not parts:
            return None
        text = "incomplete: " + "; ".join(parts)
        if self.lost:
            text += "".join(f"\n  {p}" for p in self.places)
            if self.approximate:
                text += ("\n  (counts of killed replicas lag by up to one report, so the split "
                         "above is approximate; the total is exact)")
        return text


class Losses:
    def __init__(self, plan: Plan) -> None:
        #: records inside replicas of each node when they died: lost with them
        self.held: dict[str, int] = {}
        #: command replicas that died mid-stream (see Verdict.uncounted)
        self.uncounted: list[str] = []
        #: per node: its count-group inputs and outputs
        self.count_in = {n: [s.name for s in nd.sockets.values() if s.end == END_COUNT]
                         for n, nd in plan.nodes.items()}
        senders = {sid for s, _ in plan.count_groups for sid in s}
        self.count_out = {n: [s for s in nd.sockets if f"{n}.{s}" in senders]
                          for n, nd in plan.nodes.items()}

    def in_hand(self, slot: Slot) -> int:
        """What the current incarnation took from count-group inputs and did not send on."""
        cur = slot.counters.cur
        return (sum(cur.get(s, (0,))[0] for s in self.count_in[slot.node])
                - sum(cur.get(s, (0, 0))[1] for s in self.count_out[slot.node]))

    def died(self, node: str, in_hand: int, replica: str | None = None) -> None:
        """A replica of `node` died holding `in_hand` records (from its counters); a command
        replica (`replica` given) has no counters that say."""
        if replica is not None:
            if replica not in self.uncounted:
                self.uncounted.append(replica)
        elif self.count_in[node]:
            self.held[node] = self.held.get(node, 0) + in_hand

    def verdict(self, transit: list[tuple[CountGroup, int]], skipped: int,
                exactly_once: bool) -> Verdict:
        if exactly_once:  # nothing is lost; what a count group misses is resent duplicates
            return Verdict(0, skipped, uncounted=list(self.uncounted))
        lost = max(0, sum(d for _, d in transit) + sum(self.held.values()))
        places = [f"{d} of {g.expected} records sent to {', '.join(g.receivers)} never arrived"
                  for g, d in transit if d > 0]
        places += [f"{h} records were inside {node} replicas that died"
                   for node, h in self.held.items() if h > 0]
        split = sum(max(0, d) for _, d in transit) + sum(max(0, h) for h in self.held.values())
        return Verdict(lost, skipped, places, approximate=bool(lost) and split != lost,
                       uncounted=list(self.uncounted))
