"""The bare limits for ingest: FastAPI endpoints that parse the same payload model the
same way healer does and answer 202, and nothing else (no auth, no dedup, no matching,
no metrics, no log line).

    python -m bench.bare_app --listen 127.0.0.1:PORT                  # the bare limit
    python -m bench.bare_app --listen 127.0.0.1:PORT --durable FILE   # the durable floor

``--durable`` adds the least any receiver that keeps healer's promise ("a 2xx means the
alerts are on disk") must do: append the body to ``FILE`` and fsync before answering,
with group commit (one writer thread; posts that arrive during an fsync share the next
one). It shows what durability alone costs on this machine, apart from what healer does.

Both run on healer's own uvicorn settings (``healer.server.uvicorn_config``), so the only
difference a benchmark sees is what healer does beyond parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request, Response

from healer.errors import PayloadError
from healer.payload import parse_webhook
from healer.server import GracefulServer, freeze_heap, uvicorn_config


class AppendLog:
    """Bodies appended to one file, group-committed: one write and one fsync per batch."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="append-log")
        self._queued: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, data: bytes) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((data, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await future

    async def _write_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queued:
            batch, self._queued = self._queued, []
            chunk = b"".join(data + b"\n" for data, _ in batch)
            try:
                await loop.run_in_executor(self._pool, self._write, chunk)
            except OSError as exc:
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for _, future in batch:
                future.set_result(None)

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)


def create_app(durable: Path | None = None) -> FastAPI:
    app = FastAPI(title="bare webhook" + (" (durable)" if durable else ""))
    log = AppendLog(durable) if durable is not None else None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/alerts")
    async def alerts(request: Request) -> Response:
        body = await request.body()
        try:
            message = parse_webhook(body)
        except PayloadError as exc:
            return Response(exc.message, status_code=exc.status)
        if log is not None:
            await log.append(body)
        return Response(
            f'{{"accepted":{len(message.alerts)}}}', status_code=202, media_type="application/json"
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument(
        "--durable",
        type=Path,
        metavar="FILE",
        help="append each body to FILE and fsync before answering",
    )
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    freeze_heap()  # as healer serve does: the same garbage collection for both
    GracefulServer(
        uvicorn_config(create_app(args.durable), host=host, port=int(port), grace=0)
    ).run()


if __name__ == "__main__":
    main()
