"""An OpenAI-compatible chat endpoint that serves through a `PrecisionRouter`.

`POST /v1/chat/completions` (plain and `stream=True` server-sent events; `tools` turn
the request into a tool call whose JSON the router validates) and `GET /v1/models`, on
the standard library's threading HTTP server. Each answer says which tier served it: the
`model` field is "<model>:<tier>" and an `effjax` object carries the tier, task,
confidence, tiers tried, weight bytes moved and routing time. Bad requests get a 4xx with
an OpenAI-style JSON error; beyond `max_pending` concurrent requests the server answers
429 at once instead of queueing without bound.

Streaming sends the answer as one delta per token after the decoder's jitted loop has
produced it (the loop runs on the device in one call).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid

from effjax.agents.quantclaw import PrecisionRouter, parse_tool_call

MAX_BODY = 1 << 20
ROLES = ("system", "user", "assistant", "tool")


class RequestError(ValueError):
    """A client error: HTTP status and message."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


def render_messages(messages: list, tools: list | None) -> str:
    """The prompt of a chat for a base LM: "Role: content" lines, then "Assistant:"."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "expected 'messages' to be a non-empty list", "messages")
    lines = []
    if tools:
        specs = json.dumps([t.get("function", t) for t in tools])
        lines.append(f"System: You can call these tools: {specs}. To call one, answer only "
                     'with JSON: {"name": <tool name>, "arguments": {...}}.')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(400, f"expected messages[{i}] to be an object with a role in "
                               f"{ROLES}, got {m!r:.80}", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise RequestError(400, f"expected messages[{i}].content to be a string",
                               f"messages[{i}].content")
        lines.append(f"{m['role'].capitalize()}: {content}")
    return "\n".join(lines) + "\nAssistant:"


def _check_request(body: dict) -> tuple[list, list | None, int, bool]:
    if not isinstance(body, dict):
        raise RequestError(400, "expected a JSON object")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 64))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens \
            <= 1024:
        raise RequestError(400, f"expected max_tokens to be an int in [1, 1024], got "
                           f"{max_tokens!r}", "max_tokens")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function", t).get("name"), str)
            for t in tools)):
        raise RequestError(400, "expected tools to be a list of {type, function: {name, ...}}",
                           "tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"expected stream to be a boolean, got {stream!r}", "stream")
    return body.get("messages"), tools, max_tokens, stream


def complete(router: PrecisionRouter, model: str, body: dict) -> dict:
    """The chat.completion object for a request body (raises RequestError on bad input)."""
    messages, tools, max_tokens, _ = _check_request(body)
    prompt = render_messages(messages, tools)
    out = router.generate(prompt, max_new_tokens=max_tokens,
                          task="tool_call" if tools else None, stop=("\nUser:", "\nSystem:"))
    message: dict = {"role": "assistant", "content": out.text.strip()}
    finish = "length" if len(out.tokens) >= max_tokens and not out.valid else "stop"
    call = parse_tool_call(out.text) if tools else None
    names = {t.get("function", t)["name"] for t in tools or ()}
    if call is not None and call["name"] in names:
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": f"{model}:{out.tier}",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": len(out.tokens),
                  "total_tokens": out.prompt_tokens + len(out.tokens)},
        "effjax": {"tier": out.tier, "tiers_tried": list(out.tiers_tried),
                   "task": out.detection.task, "confidence": out.detection.confidence,
                   "detector": out.detection.source, "valid": out.valid,
                   "bytes_moved": out.bytes_moved, "routing_ms": 1e3 * out.routing_s,
                   "latency_ms": 1e3 * out.latency_s},
    }


def stream_chunks(result: dict, tokens_text: list[str]) -> list[dict]:
    """chat.completion.chunk objects for a finished completion: the role, one delta per
    token (or the tool call), the finish reason."""
    base = {k: result[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    choice = result["choices"][0]
    msg = choice["message"]
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                    "finish_reason": None}]}]
    if msg.get("tool_calls"):
        call = msg["tool_calls"][0]
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, **call}]}, "finish_reason": None}]})
    else:
        for piece in tokens_text:
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": choice["finish_reason"]}],
                   "effjax": result["effjax"]})
    return chunks


def make_server(router: PrecisionRouter, *, model: str = "effjax", host: str = "127.0.0.1",
                port: int = 0, max_pending: int = 16) -> http.server.ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server; call `serve_forever()` (or use `serve`).

    Args:
      router: the `PrecisionRouter` that answers.
      model: the model name reported (answers carry "<model>:<tier>").
      host, port: where to listen (port 0: any free port; see `server.server_address`).
      max_pending: requests served or waiting at once; more get HTTP 429.
    """
    slots = threading.BoundedSemaphore(max_pending)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the caller logs if it wants
            pass

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, param: str | None = None) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._json(status, {"error": {"message": message, "type": kind, "param": param,
                                          "code": status}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": f"{model}:{t}", "object": "model", "owned_by": "effjax"}
                    for t in router.variants] + [{"id": model, "object": "model",
                                                  "owned_by": "effjax"}]})
            else:
                self._error(404, f"no route GET {self.path}")

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._drain()
                return self._error(404, f"no route POST {self.path}")
            if not slots.acquire(blocking=False):
                self._drain()
                return self._error(429, f"more than {max_pending} requests in flight")
            try:
                self._chat()
            except RequestError as e:
                self._error(e.status, str(e), e.param)
            except Exception as e:  # noqa: BLE001 - a failed request must not kill the server
                self._error(500, f"{type(e).__name__}: {e}")
            finally:
                slots.release()

        def _drain(self):
            n = int(self.headers.get("Content-Length") or 0)
            if 0 < n <= MAX_BODY:
                self.rfile.read(n)
            elif n:
                self.close_connection = True

        def _chat(self):
            n = self.headers.get("Content-Length")
            if n is None or not n.isdigit():
                raise RequestError(411, "expected a Content-Length header")
            if int(n) > MAX_BODY:
                self.close_connection = True
                raise RequestError(413, f"request body over {MAX_BODY} bytes")
            try:
                body = json.loads(self.rfile.read(int(n)) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"request body is not JSON: {e}") from None
            result = complete(router, model, body)
            if not body.get("stream"):
                return self._json(200, result)
            text = result["choices"][0]["message"]["content"] or ""
            pieces = _token_pieces(router.tokenizer, text)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in stream_chunks(result, pieces):
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def _token_pieces(tokenizer, text: str) -> list[str]:
    """text cut at its token boundaries (the pieces join back to text)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, done = [], ""
    for i in range(len(ids)):
        upto = tokenizer.decode(ids[:i + 1])
        if upto.startswith(done):
            pieces.append(upto[len(done):])
            done = upto
    if done != text:
        pieces.append(text[len(done):] if text.startswith(done) else text)
    return [p for p in pieces if p]


def serve(router: PrecisionRouter, *, model: str = "effjax", host: str = "127.0.0.1",
          port: int = 8000, max_pending: int = 16) -> None:
    """Serves until interrupted (see `make_server`)."""
    server = make_server(router, model=model, host=host, port=port, max_pending=max_pending)
    print(f"serving {model} tiers {list(router.variants)} on http://{host}:"
          f"{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
