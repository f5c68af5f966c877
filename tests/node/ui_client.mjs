// The AI SDK's own client pieces against agentstream's UI message stream, for tests/e2e/test_ui_stream.py.
//
//   node ui_client.mjs '<json>'   ->   one JSON document on stdout
//
// Input: {"sdk": "ai5" | "ai7", "mode": ..., "api": ".../chat/ui", "key", "chatId", "userId", "text",
//         "stopAfterChars"}. Modes:
//   send       DefaultChatTransport.sendMessages + readUIMessageStream: the assembled UIMessage, the
//              chunk types the transport parsed, errors, and when the first text arrived
//   reload     send, leave after stopAfterChars characters of text (a page reload mid-answer), then
//              DefaultChatTransport.reconnectToStream (GET {api}/{chatId}/stream) + readUIMessageStream
//   chat       the same reload with AbstractChat, the engine of useChat: sendMessage, stop, then a new
//              chat with the same id and the user's message calls resumeStream() (useChat({resume: true}))
//   bodies     reads each of "bodies" (response bodies as text) through the transport, as if served
// Every stream part is validated by the SDK's own schema inside the transport; nothing is parsed here.

const args = JSON.parse(process.argv[2]);
const sdk = await import(args.sdk);
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = sdk;

const started = performance.now();
const since = () => Math.round(performance.now() - started);
const textOf = (message) =>
  (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
const userMessage = { id: "user-1", role: "user", parts: [{ type: "text", text: args.text ?? "hi" }] };

function transport(options = {}) {
  return new DefaultChatTransport({
    api: args.api,
    headers: { Authorization: `Bearer ${args.key}` },
    body: { user_id: args.userId ?? "anonymous" },
    ...options,
  });
}

// Reads a chunk stream into UIMessages; stops (and calls leave()) once the text is long enough.
async function read(stream, { stopAfterChars, leave } = {}) {
  const types = [];
  const errors = [];
  let firstTextAt = null;
  const tapped = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        if (chunk.type === "text-delta" && firstTextAt === null) firstTextAt = since();
        controller.enqueue(chunk);
      },
    }),
  );
  let message = null;
  let left = false;
  const failed = (e) => {
    if (!left) errors.push(String(e?.message ?? e)); // after leaving, the abort is expected
  };
  try {
    // (the loop is not left with break: ai 5's readUIMessageStream then closes its stream twice)
    for await (const snapshot of readUIMessageStream({ stream: tapped, onError: failed })) {
      if (left) continue;
      message = snapshot;
      if (stopAfterChars && textOf(message).length >= stopAfterChars) {
        left = true;
        leave();
      }
    }
  } catch (e) {
    failed(e);
  }
  return { message, types, errors, left, firstTextAt, endedAt: since() };
}

async function send(options = {}) {
  const abort = new AbortController();
  const stream = await transport().sendMessages({
    chatId: args.chatId,
    messages: [userMessage],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: abort.signal,
  });
  return read(stream, { ...options, leave: () => abort.abort() });
}

async function reconnect() {
  const stream = await transport().reconnectToStream({ chatId: args.chatId });
  return stream === null ? { status: 204 } : read(stream);
}

class State {
  constructor(messages) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage = (m) => { this.messages = [...this.messages, m]; };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (i, m) => { this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]; };
  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor(messages) {
    const errors = [];
    super({ id: args.chatId, transport: transport(), state: new State(messages), onError: (e) => errors.push(String(e)) });
    this.errors = errors;
  }
}

async function chatReload() {
  const page = new Chat([]);
  const sending = page.sendMessage({ text: args.text });
  const giveUp = performance.now() + 10_000;
  while (textOf(page.messages.at(-1)).length < args.stopAfterChars && performance.now() < giveUp) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const before = textOf(page.messages.at(-1));
  await page.stop(); // the page goes away mid-answer
  await sending;
  const reloaded = new Chat([userMessage]); // what the page had kept: the user's message
  await reloaded.resumeStream();
  return {
    before,
    messages: reloaded.messages,
    status: reloaded.status,
    errors: [...page.errors, ...reloaded.errors],
  };
}

// Response bodies given as text, each read by the transport as if a server had sent it.
async function bodies() {
  const results = [];
  for (const body of args.bodies) {
    const headers = { "content-type": "text/event-stream" };
    const fake = transport({ fetch: async () => new Response(body, { headers }) });
    const stream = await fake.sendMessages({
      chatId: "c",
      messages: [userMessage],
      trigger: "submit-message",
      messageId: undefined,
    });
    results.push(await read(stream));
  }
  return results;
}

const modes = {
  send: () => send(),
  reload: async () => ({ first: await send({ stopAfterChars: args.stopAfterChars }), resumed: await reconnect() }),
  resume: () => reconnect(),
  chat: chatReload,
  bodies,
};
process.stdout.write(JSON.stringify(await modes[args.mode]()));
