"""`make bench`: what a user feels, ours against baselines, measured as ratios in one run.

1. Time to first token and lost characters: agentstream vs the seed's "simulated streaming" (wait for the
   whole model answer, cut the UTF-8 bytes into 10-byte pieces, drop pieces that fail to decode), both
   behind uvicorn, both reading the same paced fake upstream.
2. Pipeline overhead: tokens per second through agentstream (upstream -> agent loop -> SSE -> client)
   vs reading the same upstream directly.

Machines here are small and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.server import read_sse, serve_in_thread

KEY = "bench-admin-key"
TOKENS = [
    "你好",
    "，",
    "这是",
    "一个",
    "流式",
    "回答",
    "🙂",
    "，",
    "包含",
    "表情",
    "👨‍👩‍👧",
    "和",
    "中文",
    "。",
] * 3
PACE = 0.03  # seconds between upstream tokens
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def seed_baseline(upstream: str) -> Starlette:
    """The seed's behaviour: generate the whole answer, then split its bytes into 10-byte pieces."""

    async def stream(request: Request) -> StreamingResponse:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post(f"{upstream}/chat/completions", json=body)
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

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/stream", stream, methods=["POST"])])


def measure(url: str, body: dict[str, Any], key: str) -> tuple[float, float, str, str]:
    start = time.monotonic()
    stream = read_sse(url, body, key=key)
    contents = [e for e in stream.events if e.data["chunk_type"] == "content"]
    done = stream.events[-1].data
    return contents[0].at - start, stream.events[-1].at - start, stream.content, done["final_response"]


def main() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AGENTSTREAM_ADMIN_KEY=KEY,
    )
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    import boto3
    from moto import mock_aws

    with mock_aws(), FakeOpenAI() as fake:
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        from agentstream.config import Settings
        from agentstream.store import Store, create_table
        from agentstream.web.app import create_app

        client = boto3.client("dynamodb")
        create_table("agentstream", client)
        app = create_app(Settings(), Store("agentstream", client))
        with serve_in_thread(app) as ours, serve_in_thread(seed_baseline(fake.base_url)) as seed:
            auth = {"Authorization": f"Bearer {KEY}"}
            model = {"provider": "openai", "name": "bench"}
            r = httpx.post(
                f"{ours}/api/v1/agents",
                json={"name": "b", "model": model, "memory": {"enabled": False}},
                headers=auth,
            )
            agent = r.json()["data"]["id"]
            expected = "".join(TOKENS)
            rows: dict[str, list[tuple[float, float, str, str]]] = {"agentstream": [], "seed baseline": []}
            for _ in range(RUNS):
                fake.enqueue(Reply.chat(*TOKENS, pause=PACE))
                rows["agentstream"].append(
                    measure(f"{ours}/api/v1/agents/{agent}/chat/stream", {"message": "hi"}, KEY)
                )
                fake.enqueue(Reply.chat(*TOKENS, pause=PACE))
                rows["seed baseline"].append(measure(f"{seed}/stream", {}, KEY))

            print(f"1. {len(TOKENS)} upstream tokens {PACE * 1000:.0f} ms apart, {RUNS} runs each (median)")
            print(f"   {'':15} {'TTFT ms':>9} {'total ms':>9} {'chars lost':>11}")
            medians = {}
            for name, samples in rows.items():
                ttft = statistics.median(s[0] for s in samples) * 1000
                total = statistics.median(s[1] for s in samples) * 1000
                lost = statistics.median(len(expected) - len(s[2]) for s in samples)
                medians[name] = ttft
                print(f"   {name:15} {ttft:9.1f} {total:9.1f} {lost:11.0f}")
            ratio = medians["seed baseline"] / medians["agentstream"]
            print(f"   first token reaches the client {ratio:.1f}x sooner with agentstream")

            count = 2000
            words = [f"w{i} " for i in range(count)]
            fake.enqueue(Reply.chat(*words))
            start = time.monotonic()
            direct = httpx.post(f"{fake.base_url}/chat/completions", json={"stream": True}).text
            direct_s = time.monotonic() - start
            assert direct
            fake.enqueue(Reply.chat(*words))
            _, total, text, _ = measure(f"{ours}/api/v1/agents/{agent}/chat/stream", {"message": "hi"}, KEY)
            assert text == "".join(words)
            print(
                f"2. {count} unpaced tokens: direct read {count / direct_s:,.0f} tok/s, "
                f"through agentstream {count / total:,.0f} tok/s "
                f"(agentstream/direct = {direct_s / total:.2f})"
            )


if __name__ == "__main__":
    main()
