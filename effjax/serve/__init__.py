"""Serving: an OpenAI-compatible chat endpoint in front of a `PrecisionRouter`."""

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
