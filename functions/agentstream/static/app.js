// agentstream chat page: plain JavaScript, no build step.
// Streams replies with fetch + ReadableStream (EventSource cannot POST) and renders model output as
// text nodes only, never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "agentstream.key";
  const AGENT_STORAGE = "agentstream.agent";
  const SESSION_STORAGE = "agentstream.session.";
  const USER_ID = "web";

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const state = { key: null, agents: [], agentId: null, controller: null, preferredAgent: null };

  // ---- Server-Sent Events -------------------------------------------------------------------------

  /**
   * An incremental SSE parser: feed it the body's byte chunks as they arrive; it calls onEvent with
   * {id, event, data} for each complete event. Handles events and UTF-8 characters split across
   * reads, CRLF or LF line ends, comment lines (": ping") and multi-line data.
   */
  function createSSEParser(onEvent) {
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    let data = [];
    let eventType = "";
    let lastId = null;

    function processLine(line) {
      if (line === "") {
        if (data.length > 0) onEvent({ id: lastId, event: eventType || "message", data: data.join("\n") });
        data = [];
        eventType = "";
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "id") lastId = value;
      else if (field === "event") eventType = value;
    }

    function drain(final) {
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        // A CR at the very end may be the first half of a CRLF split across reads.
        if (c === "\r" && i + 1 === buffer.length && !final) break;
        processLine(buffer.slice(start, i));
        if (c === "\r" && buffer[i + 1] === "\n") i++;
        start = i + 1;
      }
      buffer = buffer.slice(start);
    }

    return {
      push(bytes) {
        buffer += decoder.decode(bytes, { stream: true });
        drain(false);
      },
      end() {
        buffer += decoder.decode();
        drain(true);
        // A last event without its blank line still counts (a stream cut right after it).
        if (buffer !== "") processLine(buffer);
        buffer = "";
        processLine("");
      },
    };
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function apiError(response) {
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) {
      // Not JSON: keep the status line.
    }
    return new ApiError(response.status, code, `${message} (HTTP ${response.status})`);
  }

  function headers(extra) {
    return Object.assign({ Authorization: "Bearer " + state.key }, extra || {});
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (!response.ok) throw await apiError(response);
    return response.status === 204 ? null : response.json();
  }

  // ---- UI helpers ---------------------------------------------------------------------------------

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(message) {
    $("status").textContent = message;
  }

  function handleFailure(err) {
    if (err instanceof ApiError && err.status === 401) {
      askForKey("The server rejected this key (401). Paste a valid key.");
      return;
    }
    showError(err.message || String(err));
  }

  function scrollToEnd(force) {
    const nearEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
    if (force || nearEnd) window.scrollTo(0, document.body.scrollHeight);
  }

  function addMessage(role, text) {
    const item = document.createElement("li");
    item.className = "msg " + role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Agent";
    const body = document.createElement("div");
    body.className = "body";
    item.append(who, body);
    $("log").append(item);
    const message = { item, body, textNode: null };
    if (text) appendText(message, text);
    scrollToEnd(true);
    return message;
  }

  /** Append model text as a text node (never HTML); a tool block in between starts a new span. */
  function appendText(message, text) {
    if (message.textNode === null) {
      const span = document.createElement("span");
      span.className = "text";
      message.textNode = document.createTextNode("");
      span.append(message.textNode);
      message.body.append(span);
    }
    message.textNode.appendData(text);
  }

  function addNote(message, className, text) {
    const note = document.createElement("span");
    note.className = className;
    note.textContent = text;
    message.item.append(note);
    return note;
  }

  function addToolCall(message, tools, call) {
    const block = document.createElement("div");
    block.className = "tool";
    const label = document.createElement("span");
    label.textContent = `🔧 ${call.tool_name}(${JSON.stringify(call.arguments ?? {})})`;
    const result = document.createElement("span");
    result.className = "result";
    result.textContent = "… running";
    block.append(label, result);
    message.body.append(block);
    message.textNode = null;
    tools.set(call.tool_call_id, { block, result });
  }

  function addToolResult(message, tools, res) {
    let entry = tools.get(res.tool_call_id);
    if (!entry) {
      addToolCall(message, tools, { tool_call_id: res.tool_call_id, tool_name: res.tool_name, arguments: {} });
      entry = tools.get(res.tool_call_id);
    }
    entry.result.textContent = "→ " + res.content;
    if (res.is_error) entry.block.classList.add("failed");
  }

  function formatMetrics(done, measured) {
    const metrics = (done && done.metrics) || {};
    const ttft = metrics.ttft_ms ?? measured.ttftMs;
    const duration = metrics.duration_ms ?? measured.durationMs;
    const tokens = done && done.usage ? done.usage.output_tokens : 0;
    const parts = [];
    if (ttft != null) parts.push(`TTFT ${Math.round(ttft)} ms`);
    if (tokens > 0) {
      parts.push(`${tokens} tokens`);
      const generating = duration - (ttft ?? 0);
      if (generating > 0) parts.push(`${(tokens / (generating / 1000)).toFixed(1)} tokens/s`);
    } else if (measured.chunks > 0) {
      parts.push(`${measured.chunks} chunks`);
    }
    if (duration != null) parts.push(`${(duration / 1000).toFixed(2)} s`);
    if (done && done.total_steps) parts.push(`${done.total_steps} step${done.total_steps === 1 ? "" : "s"}`);
    return parts.join(" · ");
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
    $("agent").disabled = busy;
    $("new-session").disabled = busy;
  }

  // ---- Sessions and history -----------------------------------------------------------------------

  function sessionFor(agentId) {
    return sessionStorage.getItem(SESSION_STORAGE + agentId);
  }

  function showSessionInfo() {
    const session = state.agentId ? sessionFor(state.agentId) : null;
    $("session-info").textContent = session ? `Session ${session}` : "Default session";
  }

  async function loadHistory() {
    $("log").replaceChildren();
    showSessionInfo();
    const agentId = state.agentId;
    if (!agentId) return;
    const session = sessionFor(agentId) || "default";
    let body;
    try {
      body = await api("GET", `/api/v1/agents/${enc(agentId)}/sessions/${enc(session)}/messages`);
    } catch (err) {
      // No history yet (or the server keeps none): start with an empty conversation.
      if (err instanceof ApiError && err.status === 404) return;
      handleFailure(err);
      return;
    }
    if (agentId !== state.agentId || !body || !Array.isArray(body.data)) return;
    for (const message of body.data) {
      if ((message.role === "user" || message.role === "assistant") && typeof message.content === "string") {
        addMessage(message.role, message.content);
      }
    }
  }

  // ---- Chat ---------------------------------------------------------------------------------------

  async function send(text) {
    const agentId = state.agentId;
    showError("");
    addMessage("user", text);
    const reply = addMessage("assistant", "");
    reply.item.setAttribute("aria-busy", "true");
    const tools = new Map();
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    setStatus("Waiting for the first token …");

    const started = performance.now();
    const measured = { ttftMs: null, durationMs: null, chunks: 0 };
    let done = null;

    const onEvent = (event) => {
      let payload;
      try {
        payload = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      switch (payload.chunk_type) {
        case "start":
          if (payload.session_id) sessionStorage.setItem(SESSION_STORAGE + agentId, payload.session_id);
          showSessionInfo();
          break;
        case "content":
          if (measured.ttftMs === null) {
            measured.ttftMs = performance.now() - started;
            setStatus("Streaming …");
          }
          measured.chunks += 1;
          appendText(reply, payload.content || "");
          scrollToEnd(false);
          break;
        case "tool_call":
          addToolCall(reply, tools, payload);
          break;
        case "tool_result":
          addToolResult(reply, tools, payload);
          break;
        case "error":
          addNote(reply, "problem", `Error: ${payload.content}${payload.code ? ` (${payload.code})` : ""}`);
          break;
        case "done":
          done = payload;
          break;
        default:
          break;
      }
    };

    try {
      const response = await fetch(`/api/v1/agents/${enc(agentId)}/chat/stream`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(Object.assign({ message: text, user_id: USER_ID },
          sessionFor(agentId) ? { session_id: sessionFor(agentId) } : {})),
        signal: controller.signal,
      });
      if (!response.ok) throw await apiError(response);
      const parser = createSSEParser(onEvent);
      const reader = response.body.getReader();
      for (;;) {
        const { value, done: finished } = await reader.read();
        if (finished) break;
        parser.push(value);
      }
      parser.end();
      measured.durationMs = performance.now() - started;
      if (done === null) {
        addNote(reply, "problem", "The stream ended without a final event: the reply may be incomplete.");
      } else if (done.status !== "completed") {
        addNote(reply, "problem", `Run ended: ${done.status}`);
      }
      addNote(reply, "metrics", formatMetrics(done, measured));
      setStatus("");
    } catch (err) {
      measured.durationMs = performance.now() - started;
      if (err.name === "AbortError") {
        addNote(reply, "problem", "Stopped.");
        setStatus("Stopped.");
      } else {
        setStatus("");
        handleFailure(err);
      }
    } finally {
      reply.item.removeAttribute("aria-busy");
      state.controller = null;
      setBusy(false);
      $("message").focus();
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  // ---- Agents ---------------------------------------------------------------------------------------

  function agentLabel(agent) {
    const model = agent.model || {};
    return `${agent.name} — ${model.provider || "?"}/${model.name || "?"}`;
  }

  async function loadAgents(selectId) {
    const body = await api("GET", "/api/v1/agents?limit=100");
    state.agents = Array.isArray(body.data) ? body.data : [];
    const select = $("agent");
    select.replaceChildren(...state.agents.map((agent) => new Option(agentLabel(agent), agent.id)));
    const ids = state.agents.map((agent) => agent.id);
    const wanted = [selectId, state.preferredAgent, sessionStorage.getItem(AGENT_STORAGE)].find(
      (id) => id && ids.includes(id));
    state.agentId = wanted || ids[0] || null;
    select.value = state.agentId || "";
    $("send").disabled = !state.agentId;
    if (!state.agentId) {
      setStatus("No agent yet: create one.");
      toggleAgentForm(true);
    } else {
      sessionStorage.setItem(AGENT_STORAGE, state.agentId);
      setStatus("");
    }
    await loadHistory();
  }

  function toggleAgentForm(open) {
    $("new-agent").hidden = !open;
    $("new-agent-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("agent-name").focus();
  }

  async function createAgent(form) {
    const data = new FormData(form);
    const body = {
      name: data.get("name"),
      instructions: data.get("instructions"),
      model: { provider: data.get("provider"), name: data.get("model") },
      tools: data.getAll("tools"),
    };
    const created = await api("POST", "/api/v1/agents", body);
    toggleAgentForm(false);
    form.reset();
    await loadAgents(created.data.id);
  }

  // ---- Key ------------------------------------------------------------------------------------------

  function askForKey(note) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    $("controls").hidden = true;
    $("chat").hidden = true;
    $("new-agent").hidden = true;
    $("key-panel").hidden = false;
    if (note) $("key-note").textContent = note;
    $("key").value = "";
    $("key").focus();
  }

  async function useKey(key) {
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-panel").hidden = true;
    $("controls").hidden = false;
    $("chat").hidden = false;
    try {
      await loadAgents();
      $("message").focus();
    } catch (err) {
      handleFailure(err);
    }
  }

  /** Take `#key=...&agent=...` from the URL fragment (never sent to the server), then clear it. */
  function readFragment() {
    if (!location.hash) return;
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("key")) sessionStorage.setItem(KEY_STORAGE, params.get("key"));
    if (params.get("agent")) state.preferredAgent = params.get("agent");
    history.replaceState(null, "", location.pathname + location.search);
  }

  // ---- Wiring ---------------------------------------------------------------------------------------

  function init() {
    readFragment();
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("key").value.trim();
      if (key) useKey(key);
    });
    $("change-key").addEventListener("click", () => askForKey("Paste another key."));
    $("agent").addEventListener("change", () => {
      state.agentId = $("agent").value;
      sessionStorage.setItem(AGENT_STORAGE, state.agentId);
      showError("");
      loadHistory();
    });
    $("new-agent-toggle").addEventListener("click", () => toggleAgentForm($("new-agent").hidden));
    $("agent-cancel").addEventListener("click", () => toggleAgentForm(false));
    $("agent-form").addEventListener("submit", (e) => {
      e.preventDefault();
      createAgent(e.target).catch(handleFailure);
    });
    $("new-session").addEventListener("click", () => {
      if (!state.agentId) return;
      const id = "web-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()));
      sessionStorage.setItem(SESSION_STORAGE + state.agentId, id);
      $("log").replaceChildren();
      showSessionInfo();
      $("message").focus();
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("message").value.trim();
      if (!text || !state.agentId || state.controller) return;
      $("message").value = "";
      send(text);
    });
    $("message").addEventListener("keydown", (e) => {
      // isComposing: Enter that confirms an IME composition (Chinese, Japanese, ...) must not send.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("stop").addEventListener("click", stop);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") stop();
    });

    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) useKey(key);
    else askForKey();
  }

  // Exposed for tests and the curious: the parser has no DOM dependencies.
  window.agentstream = { createSSEParser };
  init();
})();
