"""The chat page in a real headless browser (Debian's chromium, driven by Playwright for Python).

Runs against the real app (uvicorn, moto DynamoDB, the scripted provider). Skips only where chromium
cannot be had and CI is not `true`; under CI a missing browser fails the run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from agentstream.core.providers.base import ModelRequest, ProviderEvent
from agentstream.core.providers.scripted import ScriptedProvider
from tests.conftest import ADMIN_KEY as KEY
from tests.support.server import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends chromium"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"Debian's chromium is not installed ({CHROMIUM}); install it with: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()


REPLY = "The result is 14."


class ClosingProvider(ScriptedProvider):
    """The scripted provider, counting streams that were closed before they finished."""

    def __init__(self) -> None:
        self.closed_early = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        finished = False
        try:
            async for event in super().stream(request):
                yield event
            finished = True
        finally:
            if not finished:
                self.closed_early += 1


class Server:
    def __init__(self, base_url: str, provider: ClosingProvider, agent_id: str) -> None:
        self.base_url = base_url
        self.provider = provider
        self.agent_id = agent_id

    def agents(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base_url}/api/v1/agents", headers={"Authorization": f"Bearer {KEY}"})
        data: list[dict[str, Any]] = r.json()["data"]
        return data


@pytest.fixture
def standin(app: Any) -> Iterator[Server]:
    provider = ClosingProvider()

    async def factory(name: str, settings: Any) -> ClosingProvider:
        return provider

    app.state.chat._providers = factory
    with serve_in_thread(app) as url:
        body = {
            "name": "local",
            "instructions": "Be brief.",
            "model": {"provider": "scripted", "name": "demo", "options": {"delta_chars": 2, "delay_ms": 90}},
            "tools": ["calculator", "current_time"],
        }
        r = httpx.post(f"{url}/api/v1/agents", json=body, headers={"Authorization": f"Bearer {KEY}"})
        yield Server(url, provider, r.json()["data"]["id"])


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    yield page
    context.close()


# Records (time, reply length in code points) at every change of the conversation, inside the page.
WATCH_REPLY = """() => {
  window.__lengths = [];
  const reply = () => {
    const items = document.querySelectorAll('#log .msg.assistant');
    const last = items[items.length - 1];
    return last ? Array.from(last.querySelectorAll('.text')).map((s) => s.textContent).join('') : '';
  };
  new MutationObserver(() => window.__lengths.push([performance.now(), [...reply()].length]))
    .observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
  window.__reply = reply;
}"""


def open_chat(page: Page, standin: Server, fragment: str | None = None) -> None:
    fragment = fragment or f"key={KEY}&agent={standin.agent_id}"
    page.goto(f"{standin.base_url}/#{fragment}")
    page.wait_for_selector("#composer", state="visible")


def test_reply_streams_in_and_ends_exact(page: Page, standin: Server) -> None:
    open_chat(page, standin)
    assert "key=" not in page.url, "the key must leave the address bar"
    assert page.evaluate("sessionStorage.getItem('agentstream.key')") == KEY
    page.evaluate(WATCH_REPLY)

    page.fill("#message", "What is 2+3*4?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant .metrics", timeout=15_000)

    assert page.evaluate("window.__reply()") == REPLY
    lengths: list[list[float]] = page.evaluate("window.__lengths")
    partial = sorted({n for _, n in lengths if 0 < n < len(REPLY)})
    assert len(partial) >= 5, f"the reply did not grow in steps: {partial}"
    first_text = next(t for t, n in lengths if n > 0)
    complete = next(t for t, n in lengths if n == len(REPLY))
    assert complete - first_text > 400, "the text arrived all at once"

    tool = page.inner_text(".msg.assistant .tool")
    assert "calculator" in tool
    assert "2+3*4" in tool
    assert "→ 14" in tool
    metrics = page.inner_text(".msg.assistant .metrics")
    assert "TTFT" in metrics
    assert "tokens/s" in metrics
    assert page.inner_text(".msg.user .text") == "What is 2+3*4?"
    assert page.is_hidden("#error"), "the missing history (404) must not show as an error"
    assert page.get_attribute(".msg.assistant", "aria-busy") is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)


def test_stop_aborts_the_request(page: Page, standin: Server) -> None:
    open_chat(page, standin)
    page.fill("#message", "slow")
    page.click("#send")
    page.wait_for_function("document.querySelector('.msg.assistant .text')?.textContent.length > 10")
    page.click("#stop")
    page.wait_for_selector(".msg.assistant .problem:has-text('Stopped.')")
    deadline = time.monotonic() + 5
    while standin.provider.closed_early == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.provider.closed_early == 1, "the server never stopped the run when the client left"
    assert page.is_enabled("#send")
    assert page.is_disabled("#stop")


def test_wrong_key_asks_for_another(page: Page, standin: Server) -> None:
    open_chat_attempt = f"{standin.base_url}/#key=wrong"
    page.goto(open_chat_attempt)
    page.wait_for_selector("#key-panel", state="visible")
    assert "rejected" in page.inner_text("#key-note")
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#composer", state="visible")
    assert page.inner_text("#agent option") == "local — scripted/demo"


def test_created_agent_is_selected(page: Page, standin: Server) -> None:
    open_chat(page, standin)
    page.click("#new-agent-toggle")
    page.fill("#agent-name", "poet")
    page.fill("#agent-model", "gemma-3-270m")
    page.click("#agent-form button[type=submit]")
    page.wait_for_function("document.querySelector('#agent').selectedOptions[0]?.text.startsWith('poet')")
    created = [a for a in standin.agents() if a["name"] == "poet"]
    assert (created[0]["model"]["provider"], created[0]["model"]["name"]) == ("openai", "gemma-3-270m")
    assert created[0]["tools"] == ["calculator", "current_time"]


# Bytes as they may come off the wire: one event split inside "你" (E4 BD A0), a multi-line data field
# split between the CR and the LF of a CRLF, a comment, and a last event without its blank line.
PARSER_CASE = """() => {
  const events = [];
  const parser = window.agentstream.createSSEParser((e) => events.push(e));
  const enc = new TextEncoder();
  const text = 'id: 0\\r\\ndata: {"content":"你好"}\\r\\n\\r\\n: ping\\n\\n'
    + 'id: 1\\r\\ndata: a\\r\\ndata: b\\r\\n\\r\\ndata: last';
  const bytes = enc.encode(text);
  const han = bytes.indexOf(0xe4);
  const cr = enc.encode(text.slice(0, text.indexOf('data: a') + 'data: a'.length)).length;
  const cuts = [3, han + 1, han + 2, cr + 1, bytes.length];
  let start = 0;
  for (const cut of cuts) { parser.push(bytes.slice(start, cut)); start = cut; }
  parser.end();
  return events;
}"""


def test_sse_parser_handles_split_reads(page: Page, standin: Server) -> None:
    open_chat(page, standin)
    events: list[dict[str, Any]] = page.evaluate(PARSER_CASE)
    assert events == [
        {"id": "0", "event": "message", "data": '{"content":"你好"}'},
        {"id": "1", "event": "message", "data": "a\nb"},
        {"id": "1", "event": "message", "data": "last"},
    ]
