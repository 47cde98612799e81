"""The bare limit for ingest: a FastAPI endpoint that parses the same payload model the
same way healer does and answers 202, nothing else (no journal, no auth, no matching).

    python -m bench.bare_app --listen 127.0.0.1:PORT

It runs on healer's own uvicorn settings (``healer.server.uvicorn_config``), so the
only difference a benchmark sees is what healer does beyond parsing.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request, Response

from healer.errors import PayloadError
from healer.payload import parse_webhook
from healer.server import GracefulServer, uvicorn_config


def create_app() -> FastAPI:
    app = FastAPI(title="bare webhook")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/alerts")
    async def alerts(request: Request) -> Response:
        try:
            message = parse_webhook(await request.body())
        except PayloadError as exc:
            return Response(exc.message, status_code=exc.status)
        return Response(f'{{"accepted":{len(message.alerts)}}}', status_code=202,
                        media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    GracefulServer(uvicorn_config(create_app(), host=host, port=int(port), grace=0)).run()


if __name__ == "__main__":
    main()
