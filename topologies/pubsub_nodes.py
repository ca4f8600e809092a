"""Node code for pubsub.yaml."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import zflow

CITIES = ("paris", "rome", "madrid", "oslo")


def readings(count: int = 3000) -> Iterator[dict]:
    """Source: `count` readings, cycling through the cities."""
    for i in range(count):
        city = CITIES[i % len(CITIES)]
        yield {"topic": f"weather.{city}", "city": city, "temp": (i * 7) % 35}


class Tally:
    """Sink: counts readings per city; the summary shows what each filter let through."""

    def __init__(self) -> None:
        self.cities: Counter[str] = Counter()

    def __call__(self, reading: dict) -> None:
        self.cities[reading["city"]] += 1

    def end(self, totals: zflow.Totals) -> dict:
        return {"received": totals.received, **dict(sorted(self.cities.items()))}
