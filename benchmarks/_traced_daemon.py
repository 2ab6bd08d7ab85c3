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


def _stats(diff: list[tracemalloc.StatisticDiff]) -> list[dict[str, Any]]:
    out = []
    for stat in diff[:_TOP]:
        frames = [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback]
        out.append(
            {
                "where": frames[-1] if frames else "?",
                "chain": frames[-6:],
                "size_diff_kb": round(stat.size_diff / 1024, 1),
                "count_diff": stat.count_diff,
                "size_kb": round(stat.size / 1024, 1),
            }
        )
    return out


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"),
        ]
    )


def _watch(path: Path, every_s: float, warmup_s: float) -> None:
    time.sleep(warmup_s)
    first = previous = _filtered(tracemalloc.take_snapshot())
    began = time.monotonic()
    while True:
        time.sleep(every_s)
        now = _filtered(tracemalloc.take_snapshot())
        traced, _peak = tracemalloc.get_traced_memory()
        entry = {
            "t_s": round(time.monotonic() - began, 1),
            "traced_mb": round(traced / 2**20, 2),
            "since_previous_by_line": _stats(now.compare_to(previous, "lineno")),
            "since_warmup_by_line": _stats(now.compare_to(first, "lineno")),
            "since_warmup_by_chain": _stats(now.compare_to(first, "traceback")),
        }
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        previous = now


def main() -> None:
    frames = int(os.environ.get("SOAK_TRACE_FRAMES", "8"))
    tracemalloc.start(frames)
    target = os.environ.get("SOAK_TRACE_FILE")
    if target:
        watcher = threading.Thread(
            target=_watch,
            args=(
                Path(target),
                float(os.environ.get("SOAK_TRACE_EVERY_S", "60")),
                float(os.environ.get("SOAK_TRACE_WARMUP_S", "120")),
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
