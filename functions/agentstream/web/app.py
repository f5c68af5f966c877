"""The FastAPI app: routes, error bodies, wiring of the core. Thin: the work is in ``agentstream.core``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import __version__
from agentstream.config import Settings, get_settings
from agentstream.core.service import ChatService
from agentstream.errors import AgentStreamError
from agentstream.store import Store
from agentstream.telemetry import build_telemetry
from agentstream.web import openai
from agentstream.web.auth import authenticate
from agentstream.web.routes import router

__all__ = ["BodyLimit", "create_app", "error_response"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "static"

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _location(error: Any) -> str:
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"


def _validation_message(errors: list[Any]) -> str:
    parts = [f"{_location(error)}: {error.get('msg', 'invalid')}" for error in errors]
    return "; ".join(parts) or "invalid request"


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The error body of the path's API: OpenAI's shape under ``/v1/``, ours everywhere else."""
    if request.url.path.startswith("/v1/"):
        return JSONResponse(
            openai.error_body(status, code, message, param), status_code=status, headers=headers
        )
    return error_response(status, code, message, headers)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before they are read or parsed.

    A ``Content-Length`` over the limit is answered at once, before auth and routing; a body that
    comes without one (chunked) is counted as it is received, and reading past the limit ends the
    request with the same 413 (an ``HTTPException`` the app's handler shapes).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit() and int(value) > self.max_bytes:
                response = _error(Request(scope), 413, "payload_too_large", self._message())
                await response(scope, receive, send)
                return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(413, self._message())
            return message

        await self.app(scope, bounded, send)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or get_settings()
    published = settings.publish_openapi
    app = FastAPI(
        title="agentstream",
        version=__version__,
        openapi_url="/openapi.json" if published else None,
        docs_url="/docs" if published else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store or Store(
        settings.table, history_ttl_days=settings.history_ttl_days, run_ttl_days=settings.run_ttl_days
    )
    app.state.chat = ChatService(app.state.store, settings, telemetry=build_telemetry(settings))

    @app.exception_handler(AgentStreamError)
    async def _agentstream_error(request: Request, exc: AgentStreamError) -> JSONResponse:
        if exc.status >= 500:
            logger.warning("%s %s failed: %s (%s)", request.method, request.url.path, exc.message, exc.code)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            headers = {**(headers or {}), "Retry-After": str(math.ceil(retry_after))}
        return _error(request, exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        param = _location(errors[0]) if errors else None
        return _error(request, 422, "invalid_request", _validation_message(errors), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _error(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "internal error")

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    if not published:  # the schema is for callers with a key, as every route (CONTRACT.md); no /docs

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authenticate)])
        async def openapi_document() -> JSONResponse:
            return JSONResponse(app.openapi())

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        """The chat page (no auth: it asks for a key and sends it as a bearer token)."""
        return FileResponse(STATIC / "index.html")

    return app
