"""A 50 MB webhook body against the real ``healer serve`` (uvicorn and all): refused
with 413 after about ``max_body`` bytes, never read whole into memory.

The client is a raw socket on 127.0.0.1 that keeps streaming until an answer arrives,
so the test sees when the server gave up, not when the client finished.
"""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import yaml

from tests.support import HealerFactory

TOKEN = "big-body-token"
FIFTY_MB = 50 * 1024 * 1024
MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stream_until_answered(port: int, *, chunked: bool, timeout: float = 30.0) -> tuple[bytes, int]:
    """POST up to 50 MB, sending while the server reads; stop at its first answer.
    Returns (the answer's first bytes, body bytes sent)."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {FIFTY_MB}"
    head = (
        f"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    payload = b" " * (64 * 1024)
    frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n" if chunked else payload
    sent = 0  # body bytes handed to the socket (framing not counted)
    pending = b""  # the rest of a frame the socket did not take yet
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            if not pending and sent < FIFTY_MB:
                pending, sent = frame, sent + len(payload)
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 0.5)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    pending = pending[sock.send(pending) :]
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    continue
        head_end = answer.find(b"\r\n\r\n") + 4
        length = next(
            (
                int(line.split(b":")[1])
                for line in answer[:head_end].split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while time.monotonic() < deadline and len(answer) < head_end + length:
            if select.select([sock], [], [], 0.5)[0]:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
    return answer, sent


def test_a_fifty_megabyte_body_is_refused_early(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """Declared (Content-Length) and chunked 50 MB bodies both get 413 long before the
    client could send them all, and healer's RSS does not grow by anything near 50 MB."""
    config = tmp_path / "healer.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": str(tmp_path / "journal.db"),
                "prometheus": {"url": "http://127.0.0.1:9"},
                "webhook": {"max_body": "1MiB"},
            }
        )
    )
    healer = healer_process.start(config, env={"HEALER_WEBHOOK_TOKEN": TOKEN})
    assert healer.pid is not None
    before = rss_bytes(healer.pid)
    for chunked in (False, True):
        answer, sent = stream_until_answered(healer.port, chunked=chunked)
        assert answer.startswith(b"HTTP/1.1 413 "), (chunked, answer[:200])
        assert sent < FIFTY_MB // 2, (chunked, sent)
        if not chunked:
            assert b"52428800 bytes is over the 1048576-byte limit" in answer
    grown = rss_bytes(healer.pid) - before
    assert grown < 20 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
