"""`headend run` with tracemalloc on, for the soak benchmark's `--tracemalloc` runs.

Kept out of the product: the benchmark starts the daemon through this module, which starts
tracing, runs the ordinary CLI, and from a thread writes every `SOAK_TRACE_EVERY_S` seconds
what grew since the previous snapshot and since the first one after warm-up (by source line
and by the allocating call chain) as one JSON line to `SOAK_TRACE_FILE`. Tracing costs CPU
and memory of its own, so a traced run's RSS and CPU figures are not the untraced ones.

    python -m benchmarks._traced_daemon run --config FILE"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import tracemalloc
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


def main() -> None:
    frames = int(os.environ.get("SOAK_TRACE_FRAMES", "4"))
    tracemalloc.start(frames)
    target = os.environ.get("SOAK_TRACE_FILE")
    if target:
        watcher = threading.Thread(
            target=_watch,
            args=(
                Path(target),
                float(os.environ.get("SOAK_TRACE_EVERY_S", "60")),
                float(os.environ.get("SOAK_TRACE_WARMUP_S", "120")),
                frames,
            ),
            daemon=True,
            name="tracemalloc-watch",
        )
        watcher.start()
    from headend.cli.app import main as headend_main

    sys.argv = ["headend", *sys.argv[1:]]
    headend_main()


if __name__ == "__main__":
    main()
