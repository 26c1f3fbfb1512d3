"""The OpenAI-compatible endpoint, driven by the official `openai` client over loopback."""

import concurrent.futures
import http.client
import json
import threading

import pytest

from effjax.agents import Detection, PrecisionRouter, RoutedOutput
from effjax.serve import RequestError, complete, make_server, render_messages, stream_chunks

openai = pytest.importorskip("openai")


@pytest.fixture
def server(tiny_router):
    srv = make_server(tiny_router, model="tiny", max_pending=2)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _client(srv):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                         api_key="unused", max_retries=0)


def test_plain_and_streaming(server):
    client = _client(server)
    msgs = [{"role": "user", "content": "Continue the story: once upon a time"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4)
    assert r.model == "tiny:4bit" and r.model_extra["effjax"]["tier"] == "4bit"
    assert r.model_extra["effjax"]["task"] == "continuation"
    assert r.usage.completion_tokens == 4 and r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4,
                                            stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model == "tiny:4bit"
    r = client.chat.completions.create(model="tiny", max_tokens=4, messages=[
        {"role": "user", "content": "What is 12 + 30?"}])
    assert r.model_extra["effjax"]["task"] == "arithmetic"
    assert r.model_extra["effjax"]["tiers_tried"][0] == "16bit"
    assert {m.id for m in client.models.list()} >= {"tiny:4bit", "tiny:8bit", "tiny:16bit"}


class ScriptedRouter(PrecisionRouter):
    """The real router's plumbing with a fixed model answer (a tiny random model cannot
    write a tool call; this checks how the endpoint turns one into `tool_calls`)."""

    def generate(self, prompt, *, max_new_tokens=64, task=None, tier=None, stop=()):
        assert "get_weather" in prompt and task == "tool_call"
        text = ' {"name": "get_weather", "arguments": {"city": "Paris"}}'
        return RoutedOutput(text, [1, 2, 3], "8bit", ("8bit",), Detection(task, 1.0, "given"),
                            True, 0.01, 0.0001, 123, 9)


def test_tool_call(tiny_router_parts):
    config, _, tokenizer, variants = tiny_router_parts
    srv = make_server(ScriptedRouter(variants, config, tokenizer), model="tiny")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]
        r = _client(srv).chat.completions.create(model="tiny", tools=tools, messages=[
            {"role": "user", "content": "Weather in Paris?"}])
        call = r.choices[0].message.tool_calls[0]
        assert r.choices[0].finish_reason == "tool_calls" and r.model == "tiny:8bit"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        chunks = list(_client(srv).chat.completions.create(
            model="tiny", tools=tools, stream=True,
            messages=[{"role": "user", "content": "Weather in Paris?"}]))
        assert any(c.choices[0].delta.tool_calls for c in chunks)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def _raw(srv, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _declared_only(srv, length):
    """Sends only headers declaring a `length`-byte body; the server must answer first."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    (b"[]", 400, None),
    (json.dumps({"messages": []}).encode(), 400, "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400,
     "messages[0]"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400,
     "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).encode(),
     400, "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}).encode(),
     400, "stream"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": [1]}).encode(), 400,
     "tools"),
])
def test_malformed_requests_get_4xx_json(server, body, status, param):
    got, data = _raw(server, "POST", "/v1/chat/completions", body,
                     {"Content-Type": "application/json"})
    err = json.loads(data)["error"]
    assert got == status and err["param"] == param and err["message"]


def test_routes_limits_and_survival(server):
    assert _raw(server, "GET", "/v1/nothing")[0] == 404
    assert _raw(server, "POST", "/v1/completions", b"{}")[0] == 404
    # Judged on the declared length before any body is read (a client streaming a
    # body that large would race the server's early answer and close).
    assert _declared_only(server, (1 << 20) + 1)[0] == 413
    ok = json.dumps({"messages": [{"role": "user", "content": "Continue: the"}],
                     "max_tokens": 4}).encode()

    def one(_):
        return _raw(server, "POST", "/v1/chat/completions", ok)[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # a burst past max_pending=2
        codes = list(pool.map(one, range(8)))
    assert set(codes) <= {200, 429} and 200 in codes
    assert one(0) == 200  # still serving


def test_render_and_chunks():
    prompt = render_messages([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                             None)
    assert prompt == "System: Be brief.\nUser: Hi\nAssistant:"
    with pytest.raises(RequestError, match="non-empty list"):
        render_messages("hello", None)
    result = {"id": "x", "created": 1, "model": "m:4bit", "effjax": {"tier": "4bit"},
              "choices": [{"message": {"role": "assistant", "content": "ab"},
                           "finish_reason": "stop"}]}
    chunks = stream_chunks(result, ["a", "b"])
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant"}, {"content": "a"}, {"content": "b"}, {}]
    assert chunks[-1]["effjax"] == {"tier": "4bit"}


def test_complete_without_server(tiny_router):
    r = complete(tiny_router, "tiny", {"messages": [{"role": "user", "content": "Continue: a"}],
                                       "max_tokens": 4})
    assert r["object"] == "chat.completion" and r["usage"]["completion_tokens"] == 4
