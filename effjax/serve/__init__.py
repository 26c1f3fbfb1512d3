"""Serving: an OpenAI-compatible chat endpoint in front of a `PrecisionRouter`.

Contents: `python -m effjax.serve [--model smollm2-135m] [--port 8000]`: an OpenAI-compatible
`/v1/chat/completions` (plain, `stream=True` server-sent events, `tools` -> `tool_calls`) and
`/v1/models` that answers through the router (`model` = "<model>:<tier>", an `effjax` object
with tier, task, confidence, bytes moved, routing ms); malformed requests get 4xx with a JSON
error, more than `max_pending` concurrent requests get 429; `make_server`, `complete`,
`render_messages`.
"""

from effjax.serve.openai_api import (
    RequestError,
    complete,
    make_server,
    render_messages,
    serve,
    stream_chunks,
)

__all__ = ["RequestError", "complete", "make_server", "render_messages", "serve",
           "stream_chunks"]
