"""A sensor's health over a run's window: what the judge needs to tell MISSED from
SENSOR_DOWN (a miss is only a miss when the sensor was alive)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Health:
    """A sensor's health over a run's window."""

    up: bool
    reason: str = ""
    lost: int = 0
    malformed: int = 0
    synced: bool = False
