"""Loader for the external test vectors in ../shared/vectors (never copied into the repo).

`load_vectors` is for use inside a test (skips it when the vectors are absent);
`vector_params` is for `pytest.mark.parametrize` at import time (one skipped param instead)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
VECTORS_FILE = VECTORS_DIR / "real_meters.json"
MISSING_REASON = (
    f"test vectors not found: {VECTORS_FILE} (they live in ../shared/vectors beside the repo)"
)


@cache
def _all_vectors() -> tuple[dict[str, Any], ...] | None:
    if not VECTORS_FILE.is_file():
        return None
    data = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return tuple(data)


def load_vectors(layer: str | None = None) -> list[dict[str, Any]]:
    """Every vector (of `layer`, if given); skips the calling test when the file is absent."""
    vectors = _all_vectors()
    if vectors is None:
        pytest.skip(MISSING_REASON)
    return [v for v in vectors if layer is None or v["layer"] == layer]


def vector_by_id(vector_id: str) -> dict[str, Any]:
    for vector in load_vectors():
        if vector["id"] == vector_id:
            return vector
    pytest.skip(f"test vector {vector_id!r} not in {VECTORS_FILE}")


def vector_params(layer: str | None = None, predicate: Any = None) -> list[Any]:
    """Parametrize values (one per vector, id = vector id) for `pytest.mark.parametrize`."""
    vectors = _all_vectors()
    if vectors is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING_REASON), id="missing")]
    return [
        pytest.param(v, id=v["id"])
        for v in vectors
        if (layer is None or v["layer"] == layer) and (predicate is None or predicate(v))
    ]
