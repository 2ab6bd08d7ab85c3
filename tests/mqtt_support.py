"""Real brokers for the MQTT tests: the embedded amqtt one, the system Mosquitto (never
restarted) and a private Mosquitto process on a free port (restartable, with persistence)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from schema_support import ContractError, check_message

from headend.mqtt.broker import EmbeddedBroker, free_port


def system_mosquitto() -> tuple[str, int] | None:
    """Where the system Mosquitto listens, if it does: HEADEND_TEST_MQTT_HOST or 127.0.0.1:1883."""
    host = os.environ.get("HEADEND_TEST_MQTT_HOST") or "127.0.0.1"
    port = int(os.environ.get("HEADEND_TEST_MQTT_PORT") or 1883)
    if ":" in host and not host.startswith("["):
        host, port_text = host.rsplit(":", 1)
        port = int(port_text)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return host, port
    except OSError:
        if os.environ.get("HEADEND_TEST_MQTT_HOST"):
            raise  # asked for explicitly: a dead broker is a failure, not a skip
        return None


class MosquittoProcess:
    """A Mosquitto of our own, restartable; its persistence file keeps sessions over restarts."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_conf: tuple[str, ...] = ()
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "max_inflight_messages 20",
            *extra_conf,
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        conf.write_text("\n".join(lines) + "\n")
        self.conf = conf

    async def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = (self.workdir / "mosquitto.log").open("ab")
        self._proc = await asyncio.to_thread(
            subprocess.Popen, [binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        async with asyncio.timeout(10):
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self._proc.returncode}")
                try:
                    _, writer = await asyncio.open_connection(self.host, self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()  # SIGTERM: Mosquitto saves its persistence file
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headend test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@dataclass
class Broker:
    """One broker under test; ``restart`` is None when it must not be restarted (system one)."""

    kind: str
    host: str
    port: int
    redelivers_unacked: bool
    _embedded: EmbeddedBroker | None = None
    _process: MosquittoProcess | None = None
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    @property
    def restartable(self) -> bool:
        return self._embedded is not None or self._process is not None

    async def stop(self) -> None:
        if self._embedded is not None:
            await self._embedded.stop()
        elif self._process is not None:
            await self._process.stop()
        else:
            raise RuntimeError("the system broker is never stopped by tests")

    async def start(self) -> None:
        if self._embedded is not None:
            await self._embedded.start()
        elif self._process is not None:
            await self._process.start()
        else:
            raise RuntimeError("the system broker is never started by tests")


@contextlib.asynccontextmanager
async def open_broker(kind: str, workdir: Path) -> AsyncIterator[Broker]:
    """``kind``: "amqtt", "mosquitto" (the system one) or "mosquitto-proc" (our own)."""
    if kind == "amqtt":
        embedded = EmbeddedBroker()
        async with embedded:
            yield Broker(kind, embedded.host, embedded.port, False, _embedded=embedded)
    elif kind == "mosquitto":
        where = system_mosquitto()
        if where is None:
            import pytest

            pytest.skip("no Mosquitto at 127.0.0.1:1883 (set HEADEND_TEST_MQTT_HOST to use one)")
        yield Broker(kind, where[0], where[1], True)
    elif kind == "mosquitto-proc":
        if mosquitto_binary() is None:
            import pytest

            pytest.skip("mosquitto binary not installed (apt-get install mosquitto)")
        process = MosquittoProcess(workdir)
        await process.start()
        try:
            yield Broker(kind, process.host, process.port, True, _process=process)
        finally:
            await process.stop()
    else:
        raise ValueError(kind)


class Collector:
    """A plain aiomqtt subscriber that records everything it sees (persistent if named).

    Every message is checked against the MQTT contract's schemas (schema_support.py); a
    message that breaks it fails the test when the collector closes."""

    def __init__(
        self, broker: Broker, *filters: str, identifier: str | None = None, mqtt5: bool = False
    ) -> None:
        self.broker = broker
        self.mqtt5 = mqtt5
        self.filters = filters
        self.identifier = identifier
        self.messages: list[aiomqtt.Message] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.contract_errors: list[str] = []

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.contract_errors and exc[0] is None:
            raise ContractError("\n".join(self.contract_errors[:5]))

    async def _run(self) -> None:
        session: dict[str, object] = {
            "clean_session": self.identifier is None  # a named collector keeps its session
        }
        if self.mqtt5:  # MQTT 5 properties (correlation data) reach the messages
            session = {"protocol": aiomqtt.ProtocolVersion.V5}
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.identifier,
            timeout=5,
            **session,  # type: ignore[arg-type]
        ) as client:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=1)
            self._ready.set()
            async for message in client.messages:
                self.messages.append(message)
                self._check(message)
                self._changed.set()

    def _check(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            check_message(message.topic.value, payload)
        except ContractError as exc:
            self.contract_errors.append(str(exc))

    def payloads(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if m.topic.value == topic]  # type: ignore[arg-type]

    async def wait_for(self, topic: str, payload: bytes | None = None, within: float = 10) -> bytes:
        async with asyncio.timeout(within):
            while True:
                for got in self.payloads(topic):
                    if payload is None or got == payload:
                        return got
                self._changed.clear()
                await self._changed.wait()


async def publish_once(
    broker: Broker, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
) -> None:
    """Publish one message (checked against the contract's schemas first)."""
    check_message(topic, payload.encode() if isinstance(payload, str) else payload)
    async with aiomqtt.Client(broker.host, broker.port, timeout=5) as client:
        await client.publish(topic, payload, qos=qos, retain=retain, timeout=5)


async def forget_session(broker: Broker, client_id: str, *retained_topics: str) -> None:
    """Leave the (shared) system broker as we found it: no session, no retained messages."""
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=client_id, clean_session=True, timeout=5
        ) as client:
            for topic in retained_topics:
                await client.publish(topic, b"", qos=1, retain=True, timeout=5)
