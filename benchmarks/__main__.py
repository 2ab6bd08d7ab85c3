"""`python -m benchmarks <name> [options]`: runs benchmarks/<name with - as _>.py's main(argv)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        info.name.replace("_", "-")
        for info in pkgutil.iter_modules([str(here)])
        if not info.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m benchmarks <name> [--json] [options]\n"
            "       python -m benchmarks all [--quick] [--only a,b] [--json] [--out FILE]\n"
            "benchmarks: " + ", ".join(names)
        )
        return 0 if argv else 2
    name = argv[0]
    if name == "all":
        from benchmarks._suite import main as run_all

        return run_all(argv[1:])
    if name not in names:
        print(f"unknown benchmark {name!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name.replace('-', '_')}")
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
