"""The baselines, one plain FastAPI app served by its own uvicorn process (``bench.floor_app:app``).

- ``POST /stream``: the FLOOR. A ``StreamingResponse`` that writes the frames ours writes, in the same
  shape (``id: n`` + ``data: {"chunk_type":"content","content":"..."}``, a ``start`` frame first and a
  ``done`` frame with the whole text last), one JSON encoding per frame and nothing else: no agent, no
  store, no run log. Body: ``{"reply", "delta_chars", "delay_ms"}`` as the scripted provider takes them.
- ``POST /relay``: the floor for latency. Reads the (paced) fake upstream with one shared httpx client,
  and writes one content frame per upstream delta as it comes: the least a streaming proxy can do.
- ``POST /seed``: the seed's generate-then-split: wait for the whole upstream answer, cut its UTF-8 bytes
  into 10-byte pieces, drop the pieces that do not decode. The TTFB baseline.

The upstream is ``OPENAI_BASE_URL`` (the fake upstream's ``/v1``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

__all__ = ["app", "frame"]

app = FastAPI()
_client: httpx.AsyncClient | None = None


def frame(seq: int, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id: {seq}\ndata: {data}\n\n".encode()


def _upstream() -> httpx.AsyncClient:
    global _client
    if _client is None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        _client = httpx.AsyncClient(timeout=60, limits=limits)
    return _client


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream; charset=utf-8", headers=headers)


def _completion(message: str) -> dict[str, Any]:
    return {"model": "bench", "stream": True, "messages": [{"role": "user", "content": message}]}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/stream")
async def stream(request: Request) -> StreamingResponse:
    body = await request.json()
    text = str(body["reply"])
    size = max(1, int(body.get("delta_chars", 3)))
    delay = max(0.0, float(body.get("delay_ms", 0)) / 1000)

    async def events() -> AsyncIterator[bytes]:
        yield frame(0, {"chunk_type": "start", "message": "Agent started"})
        seq = 1
        for n, start in enumerate(range(0, len(text), size)):
            if n and delay:
                await asyncio.sleep(delay)
            yield frame(seq, {"chunk_type": "content", "content": text[start : start + size]})
            seq += 1
        yield frame(seq, {"chunk_type": "done", "status": "completed", "final_response": text})

    return _sse(events())


@app.post("/relay")
async def relay(request: Request) -> StreamingResponse:
    body = await request.json()
    url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"

    async def events() -> AsyncIterator[bytes]:
        yield frame(0, {"chunk_type": "start", "message": "Agent started"})
        seq = 1
        text: list[str] = []
        async with _upstream().stream("POST", url, json=_completion(body["message"])) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                for choice in json.loads(line[6:]).get("choices", []):
                    if content := choice.get("delta", {}).get("content"):
                        text.append(content)
                        yield frame(seq, {"chunk_type": "content", "content": content})
                        seq += 1
        done = {"chunk_type": "done", "status": "completed", "final_response": "".join(text)}
        yield frame(seq, done)

    return _sse(events())


@app.post("/seed")
async def seed(request: Request) -> StreamingResponse:
    """The seed's behaviour: generate the whole answer, then split its bytes into 10-byte pieces."""
    body = await request.json()
    url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
    response = await _upstream().post(url, json=_completion(body["message"]))
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""

    async def events() -> AsyncIterator[bytes]:
        data = text.encode()
        for i in range(0, len(data), 10):
            try:
                piece = data[i : i + 10].decode()
            except UnicodeDecodeError:
                continue  # what the seed did: the piece is silently dropped
            yield f"data: {json.dumps({'chunk_type': 'content', 'content': piece})}\n\n".encode()
        yield f"data: {json.dumps({'chunk_type': 'done', 'final_response': text})}\n\n".encode()

    return _sse(events())
