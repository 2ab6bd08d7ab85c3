"""The meters' side of the push benchmark, in a process of its own (its CPU is not the
listener's): opens one TCP connection per push (or one datagram each), all at once, sends,
and closes. `python -m benchmarks._push_sender PORT FILE tcp|udp`; FILE holds the frames,
each as a 4-byte big-endian length then the bytes. Prints one JSON line when done."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path


def frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


async def _connect(port: int) -> asyncio.StreamWriter | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
    except (OSError, TimeoutError):
        return None
    return writer


async def _finish(writer: asyncio.StreamWriter) -> bool:
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        return True
    except OSError:
        return False


async def send(port: int, pushes: list[bytes], transport: str) -> dict[str, object]:
    """Every meter connected first, then all push at once ("connected" is printed between,
    so the benchmark starts its clock there)."""
    if transport == "udp":
        print("connected", flush=True)
        began = time.perf_counter()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            for frame in pushes:
                sock.sendto(frame, ("127.0.0.1", port))
        return {"sent": len(pushes), "send_s": round(time.perf_counter() - began, 3)}
    writers = await asyncio.gather(*(_connect(port) for _ in pushes))
    print("connected", flush=True)
    began = time.perf_counter()
    for writer, frame in zip(writers, pushes, strict=True):
        if writer is not None:
            writer.write(frame)
    results = await asyncio.gather(*(_finish(w) for w in writers if w is not None))
    return {"sent": sum(results), "send_s": round(time.perf_counter() - began, 3)}


def main(argv: list[str]) -> int:
    port, path, transport = int(argv[0]), Path(argv[1]), argv[2]
    print(json.dumps(asyncio.run(send(port, frames(path), transport))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
