"""A tiny stand-in for ``agentstream.app`` that speaks the contract's HTTP API and SSE, for the page tests.

It serves the real static files the way the app must (``GET /`` and ``/static/...`` without auth) and
streams a scripted reply slowly, with the wire's rough edges on purpose: events and UTF-8 characters
cut across writes, CRLF line ends, ``: ping`` comments. Swap it for the real app (scripted provider)
once that lands.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from agentstream.devserver.procs import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

STATIC = Path(__file__).resolve().parents[2] / "functions" / "agentstream" / "static"
KEY = "test-key"
# The reply, as the model's deltas: CJK and an emoji so that cut writes split multi-byte characters.
PIECES_BEFORE_TOOL = ["Hello", "! ", "你好", "，", "世界", " 🌍", ". ", "Let me ", "compute", " that."]
PIECES_AFTER_TOOL = [" 2+3*4", " is ", "14", ". ", "再见", " 👋"]
REPLY = "".join(PIECES_BEFORE_TOOL + PIECES_AFTER_TOOL)
SLOW_PIECES = 400


@dataclass
class StandIn:
    base_url: str = ""
    delay: float = 0.08
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    disconnects: int = 0
    completed: int = 0


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _event(seq: int, payload: dict[str, Any], *, crlf: bool = False) -> bytes:
    text = f"id: {seq}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode("utf-8")


def create_app(state: StandIn, key: str = KEY) -> FastAPI:
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/api/") and request.headers.get("authorization") != f"Bearer {key}":
            return _error(401, "unauthorized", "missing or wrong bearer token")
        response: Response = await call_next(request)
        return response

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/agents")
    async def list_agents() -> dict[str, Any]:
        return {"data": list(state.agents.values()), "next_cursor": None}

    @app.post("/api/v1/agents", status_code=201)
    async def create_agent(body: dict[str, Any]) -> dict[str, Any]:
        agent = {**body, "id": "agt_" + uuid.uuid4().hex[:10]}
        state.agents[agent["id"]] = agent
        return {"data": agent}

    @app.get("/api/v1/agents/{agent_id}/sessions/{session_id}/messages")
    async def history(agent_id: str, session_id: str) -> JSONResponse:
        return _error(404, "not_found", "no such session")

    @app.post("/api/v1/agents/{agent_id}/chat/stream", response_model=None)
    async def chat_stream(agent_id: str, body: dict[str, Any]) -> Response:
        if agent_id not in state.agents:
            return _error(404, "not_found", f"agent {agent_id} not found")
        slow = body.get("message") == "slow"
        return StreamingResponse(
            _stream(state, agent_id, slow=slow),
            media_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-Id": "run_standin"},
        )

    return app


async def _stream(state: StandIn, agent_id: str, *, slow: bool) -> AsyncIterator[bytes]:
    seq = 0
    finished = False

    def event(payload: dict[str, Any], crlf: bool = False) -> bytes:
        nonlocal seq
        seq += 1
        return _event(seq - 1, payload, crlf=crlf)

    try:
        yield event({"chunk_type": "start", "message": "Agent started", "run_id": "run_standin",
                     "agent_id": agent_id, "session_id": "default"})  # fmt: skip
        yield b": ping\n\n"
        pieces = ["tick "] * SLOW_PIECES if slow else PIECES_BEFORE_TOOL
        for i, piece in enumerate(pieces):
            await asyncio.sleep(state.delay)
            raw = event({"chunk_type": "content", "content": piece}, crlf=i % 3 == 1)
            # Cut every event mid-way: through a line, often through a UTF-8 character.
            cut = len(raw) - 7
            yield raw[:cut]
            await asyncio.sleep(0.01)
            yield raw[cut:]
        call_id = "call_1"
        yield event({"chunk_type": "tool_call", "tool_call_id": call_id, "tool_name": "calculator",
                     "arguments": {"expression": "2+3*4"}})  # fmt: skip
        await asyncio.sleep(state.delay)
        yield event({"chunk_type": "tool_result", "tool_call_id": call_id, "tool_name": "calculator",
                     "content": "14"})  # fmt: skip
        for piece in PIECES_AFTER_TOOL:
            await asyncio.sleep(state.delay)
            yield event({"chunk_type": "content", "content": piece})
        yield b": ping\n\n"
        yield event({"chunk_type": "done", "status": "completed", "final_response": REPLY, "total_steps": 2,
                     "memories_updated": False, "memories_count": 0,
                     "usage": {"input_tokens": 12, "output_tokens": 20},
                     "metrics": {"ttft_ms": 80, "duration_ms": 1800}})  # fmt: skip
        finished = True
        state.completed += 1
    finally:
        # Cancelled because the client went away (mid-sleep or at a yield).
        if not finished:
            state.disconnects += 1


@contextmanager
def serve() -> Iterator[StandIn]:
    """Run the stand-in on a free loopback port in a thread."""
    state = StandIn()
    port = free_port()
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, lifespan="off", ws="none",
                            log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the stand-in server did not start")
        threading.Event().wait(0.02)
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
