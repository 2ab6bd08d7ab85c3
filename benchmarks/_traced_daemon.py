"""`headend run` watched from inside, for the soak benchmark's `--census` and `--tracemalloc`
runs.

Kept out of the product: the benchmark starts the daemon through this module, which runs the
ordinary CLI and from a thread writes every `SOAK_TRACE_EVERY_S` seconds, as one JSON line to
`SOAK_TRACE_FILE`, what grew since the first sample after warm-up:
- census (SOAK_TRACE_MODE=census): live objects the garbage collector tracks, counted by type
  (one pass over gc.get_objects(); cheap enough for a loaded machine, and no tracing cost);
- tracemalloc: allocations by source line and call chain. Tracing costs CPU and memory of its
  own (a snapshot of a large heap holds the GIL for seconds), so a traced run's RSS and CPU
  figures are not the untraced ones.

    python -m benchmarks._traced_daemon run --config FILE"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

_TOP = 15

Tally = dict[tuple[str, ...], tuple[int, int]]
"""(size, count) by allocating call chain: statistics only, so that a sample does not keep
every trace alive (whole snapshots of a large heap would be the biggest growth in sight)."""


def _tally(frames: int) -> Tally:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, __file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"),
        ]
    )
    group = "traceback" if frames > 1 else "lineno"
    tally: Tally = {}
    for stat in snapshot.statistics(group):
        key = tuple(f"{frame.filename}:{frame.lineno}" for frame in stat.traceback)
        tally[key] = (stat.size, stat.count)
    del snapshot
    return tally


def _growth(now: Tally, before: Tally) -> list[dict[str, Any]]:
    diffs = []
    for key, (size, count) in now.items():
        old_size, old_count = before.get(key, (0, 0))
        if size != old_size:
            diffs.append((size - old_size, count - old_count, size, key))
    diffs.sort(key=lambda d: abs(d[0]), reverse=True)
    return [
        {
            "where": key[-1] if key else "?",
            "chain": list(key[-6:]),
            "size_diff_kb": round(size_diff / 1024, 1),
            "count_diff": count_diff,
            "size_kb": round(size / 1024, 1),
        }
        for size_diff, count_diff, size, key in diffs[:_TOP]
    ]


def _by_line(tally: Tally) -> Tally:
    out: Tally = {}
    for key, (size, count) in tally.items():
        line = key[-1:] if key else ()
        old_size, old_count = out.get(line, (0, 0))
        out[line] = (old_size + size, old_count + count)
    return out


def _watch(path: Path, every_s: float, warmup_s: float, frames: int) -> None:
    time.sleep(warmup_s)
    first = previous = _tally(frames)
    began = time.monotonic()
    while True:
        time.sleep(every_s)
        now = _tally(frames)
        traced, _peak = tracemalloc.get_traced_memory()
        entry = {
            "t_s": round(time.monotonic() - began, 1),
            "traced_mb": round(traced / 2**20, 2),
            "since_previous_by_line": _growth(_by_line(now), _by_line(previous)),
            "since_warmup_by_line": _growth(_by_line(now), _by_line(first)),
            "since_warmup_by_chain": _growth(now, first),
        }
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        previous = now


def _census() -> dict[str, int]:
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return dict(counts)


def _watch_census(path: Path, every_s: float, warmup_s: float) -> None:
    time.sleep(warmup_s)
    first = _census()
    began = time.monotonic()
    while True:
        time.sleep(every_s)
        now = _census()
        growth = sorted(
            ((count - first.get(name, 0), name, count) for name, count in now.items()),
            reverse=True,
        )
        entry = {
            "t_s": round(time.monotonic() - began, 1),
            "objects": sum(now.values()),
            "since_warmup_by_type": [
                {"type": name, "count_diff": diff, "count": count}
                for diff, name, count in growth[:_TOP]
                if diff > 0
            ],
        }
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def main() -> None:
    target = os.environ.get("SOAK_TRACE_FILE")
    every_s = float(os.environ.get("SOAK_TRACE_EVERY_S", "60"))
    warmup_s = float(os.environ.get("SOAK_TRACE_WARMUP_S", "120"))
    if os.environ.get("SOAK_TRACE_MODE") == "census":
        if target:
            threading.Thread(
                target=_watch_census,
                args=(Path(target), every_s, warmup_s),
                daemon=True,
                name="census-watch",
            ).start()
        _run_headend()
        return
    frames = int(os.environ.get("SOAK_TRACE_FRAMES", "4"))
    tracemalloc.start(frames)
    if target:
        watcher = threading.Thread(
            target=_watch,
            args=(Path(target), every_s, warmup_s, frames),
            daemon=True,
            name="tracemalloc-watch",
        )
        watcher.start()
    _run_headend()


def _run_headend() -> None:
    from headend.cli.app import main as headend_main

    sys.argv = ["headend", *sys.argv[1:]]
    headend_main()


if __name__ == "__main__":
    main()
