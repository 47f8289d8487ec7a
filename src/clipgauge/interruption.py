"""A test hook that stops the process at a named point, so tests can interrupt it there.

`CLIPGAUGE_TEST_PAUSE=<point>[:<n>]` (read here and nowhere else) makes the n-th arrival (default
the first) of this process at `pause_point(<point>)` print `clipgauge: paused at <point>:<n>` to
stderr and sleep until the process is killed; SIGINT ends the sleep with KeyboardInterrupt, as
anywhere else. The points:

  train-start  a run folder's config.json is written, its first (or resumed) epoch begins
  epoch-end    an epoch's checkpoint and metrics.jsonl are saved, training goes on
  run-trained  a study run's weights are saved, its evaluation has not begun

Unset (normal use), `pause_point` returns at once.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

ENV_VAR = "CLIPGAUGE_TEST_PAUSE"
POINTS = ("train-start", "epoch-end", "run-trained")
_arrivals: Counter[str] = Counter()


def pause_point(point: str) -> None:
    """Sleep here if CLIPGAUGE_TEST_PAUSE names this point and arrival (see module docstring)."""
    wanted = os.environ.get(ENV_VAR)
    if not wanted:
        return
    _arrivals[point] += 1
    name, _, count = wanted.partition(":")
    if name != point or _arrivals[point] != int(count or 1):
        return
    print(f"clipgauge: paused at {point}:{_arrivals[point]}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)
