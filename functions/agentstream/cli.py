"""The ``agentstream`` command: run the server, create the table, chat from a terminal, manage agents."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8000"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agentstream.devserver.procs import port_is_free

    if not port_is_free(args.host, args.port):
        print(
            f"error: port {args.port} on {args.host} is in use (another agentstream?). "
            f"Stop it or choose another port: agentstream serve --port {args.port + 1}",
            file=sys.stderr,
        )
        return 2
    uvicorn.run("agentstream.app:app", host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_init_table(args: argparse.Namespace) -> int:
    from agentstream.config import get_settings
    from agentstream.store import create_table

    table = args.table or get_settings().table
    created = create_table(table)
    print(f"table {table} {'created' if created else 'already exists'}")
    return 0


class _Client:
    def __init__(self, url: str, key: str | None) -> None:
        import httpx

        if not key:
            raise SystemExit(
                "error: no API key: pass --key or set AGENTSTREAM_KEY (or AGENTSTREAM_ADMIN_KEY)"
            )
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10.0, read=None),
        )

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise SystemExit(f"error: cannot reach {self.http.base_url}: {e}") from e
        if response.status_code >= 400:
            raise SystemExit(f"error: HTTP {response.status_code}: {_error_message(response.content)}")
        return response.json() if response.content else None

    def sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        import httpx

        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise SystemExit(f"error: HTTP {response.status_code}: {_error_message(response.read())}")
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
        except httpx.HTTPError as e:
            raise SystemExit(f"error: the stream from {self.http.base_url} broke: {e}") from e


def _error_message(content: bytes) -> str:
    try:
        return str(json.loads(content)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return content.decode("utf-8", "replace")[:300]


def _client(args: argparse.Namespace) -> _Client:
    key = args.key or os.environ.get("AGENTSTREAM_KEY") or os.environ.get("AGENTSTREAM_ADMIN_KEY")
    return _Client(args.url or os.environ.get("AGENTSTREAM_URL") or DEFAULT_URL, key)


def cmd_chat(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"message": args.message, "user_id": args.user_id}
    if args.session_id:
        body["session_id"] = args.session_id
    if args.chunk_size is not None:
        body["stream_options"] = {"chunk_size": args.chunk_size}
    started = time.monotonic()
    with _client(args) as client:
        first, done = _print_stream(client.sse(f"/api/v1/agents/{args.agent_id}/chat/stream", body))
    out, err = sys.stdout, sys.stderr
    out.write("\n")
    if done is None:
        print("[error] the stream ended without a done event", file=err)
        return 1
    ttft = "-" if first is None else f"{(first - started) * 1000:.0f} ms"
    usage = done.get("usage", {})
    print(
        f"-- {done['status']} | TTFT {ttft} | {usage.get('output_tokens', '?')} output tokens | "
        f"{time.monotonic() - started:.2f} s | {done['total_steps']} step(s)",
        file=err,
    )
    return 0 if done["status"] == "completed" else 1


def _print_stream(events: Iterator[dict[str, Any]]) -> tuple[float | None, dict[str, Any] | None]:
    """Print events as they arrive; return when the first content came and the done event."""
    out, err = sys.stdout, sys.stderr
    first: float | None = None
    done: dict[str, Any] | None = None
    for event in events:
        kind = event.get("chunk_type")
        if kind == "content":
            first = first or time.monotonic()
            out.write(event["content"])
            out.flush()
        elif kind == "tool_call":
            print(
                f"\n[tool] {event['tool_name']}({json.dumps(event['arguments'], ensure_ascii=False)})",
                file=err,
            )
        elif kind == "tool_result":
            print(f"[tool] {event['tool_name']} -> {event['content']}", file=err)
        elif kind == "error":
            print(f"\n[error] {event['content']} ({event.get('code')})", file=err)
        elif kind == "done":
            done = event
    return first, done


def cmd_agents_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        agents = client.json("GET", "/api/v1/agents?limit=100")["data"]
    for agent in agents:
        model = agent["model"]
        print(f"{agent['id']}\t{agent['name']}\t{model['provider']}:{model['name']}")
    return 0


def cmd_agents_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "instructions": args.instructions,
        "model": {"provider": args.provider, "name": args.model},
        "tools": args.tool or [],
    }
    with _client(args) as client:
        agent = client.json("POST", "/api/v1/agents", body)["data"]
    print(agent["id"])
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Issue a key straight into the table (no server needed): for bootstrapping and scripts."""
    import asyncio

    from agentstream.config import get_settings
    from agentstream.store import Store

    record, token = asyncio.run(Store(args.table or get_settings().table).keys.create(args.tenant, args.name))
    print(token)
    print(
        f"key {record.id} for tenant {record.tenant!r}: store it now, it is not shown again", file=sys.stderr
    )
    return 0


def cmd_keys_migrate(args: argparse.Namespace) -> int:
    """Move keys issued before the key shards out of the old single ``KEYS`` partition."""
    import asyncio

    from agentstream.config import get_settings
    from agentstream.store import Store

    moved = asyncio.run(Store(args.table or get_settings().table).keys.migrate_legacy())
    print(f"{moved} key(s) moved into their shards", file=sys.stderr)
    return 0


def _remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"service URL (env AGENTSTREAM_URL; default {DEFAULT_URL})")
    parser.add_argument("--key", help="API key (env AGENTSTREAM_KEY or AGENTSTREAM_ADMIN_KEY)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service locally (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    init = sub.add_parser("init-table", help="create the DynamoDB table where boto3 is configured to go")
    init.add_argument("--table", help="table name (default: AGENTSTREAM_TABLE or 'agentstream')")
    init.set_defaults(func=cmd_init_table)

    chat = sub.add_parser("chat", help="stream an agent's reply to the terminal")
    chat.add_argument("agent_id")
    chat.add_argument("message")
    chat.add_argument("--user-id", default="cli")
    chat.add_argument("--session-id")
    chat.add_argument("--chunk-size", type=int)
    _remote(chat)
    chat.set_defaults(func=cmd_chat)

    agents = sub.add_parser("agents", help="list or create agents").add_subparsers(
        dest="action", required=True
    )
    listing = agents.add_parser("list")
    _remote(listing)
    listing.set_defaults(func=cmd_agents_list)
    create = agents.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--provider", default="openai")
    create.add_argument("--model", required=True, help="model name at the provider")
    create.add_argument("--instructions", default="You are a helpful assistant.")
    create.add_argument("--tool", action="append", help="a built-in tool (repeatable)")
    _remote(create)
    create.set_defaults(func=cmd_agents_create)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="issue a tenant key into the table (shown once)")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument("--name", default="")
    key_create.add_argument("--table", help="table name (default: AGENTSTREAM_TABLE or 'agentstream')")
    key_create.set_defaults(func=cmd_keys_create)
    key_migrate = keys.add_parser("migrate", help="move keys issued before the key shards into them")
    key_migrate.add_argument("--table", help="table name (default: AGENTSTREAM_TABLE or 'agentstream')")
    key_migrate.set_defaults(func=cmd_keys_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
