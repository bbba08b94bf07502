"""Every class of bad request gets a 4xx with a clear message and the server keeps serving; a full queue is a 429;
a client that goes away cancels its generation. Deterministic: generations that must be in flight are held at a
step by the engine's test hook, never raced against a clock."""

import base64
import json
import socket
import threading
import time

import pytest

QUESTION = "What moves?"


def _body(video=None, **extra):
    content = [{"type": "video_url", "video_url": {"url": video}}] if video else []
    content += [{"type": "text", "text": QUESTION}]
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def _post(url, body, headers=None, timeout=60):
    """(status, parsed JSON or text) of a POST to /v1/chat/completions."""
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode()


def _raw(url, head: bytes, body: bytes = b"", close_after=None, timeout=60):
    """Send raw bytes on a new connection; return what comes back until the server closes or `close_after` bytes
    have arrived."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head + body)
        got = b""
        while close_after is None or close_after not in got:
            piece = s.recv(65536)
            if not piece:
                break
            got += piece
        return got


def _request_head(url, length, extra=b""):
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + url.split("//")[1].encode() +
            b"\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n")


def _wait(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_every_bad_request_is_a_4xx_naming_the_problem_and_the_server_keeps_serving(serve, clips, tmp_path):
    good = _body("a.mp4")
    garbage = "data:video/mp4;base64," + base64.b64encode(b"this is no video at all" * 10).decode()
    big = "data:video/mp4;base64," + base64.b64encode((clips / "a.mp4").read_bytes() * 3).decode()
    cases = [
        (b"{not json", 400, "the body is not valid JSON"),
        ({**good, "frequency_penalty": 0.5}, 400, "unknown field 'frequency_penalty'"),
        ({**good, "model": "other"}, 404, "model 'other' is not served here; this server serves 'tiny'"),
        ({**good, "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
        ({**good, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop: expected up to 4 non-empty strings"),
        ({**good, "messages": [{"role": "assistant", "content": "hi"}]}, 400, "the last message must be the user's"),
        (_body(garbage), 400, "video_url: the video: cannot be read as a video"),
        (_body("missing.mp4"), 400, "no file missing.mp4 under the server's media root"),
        (_body(str(tmp_path / "outside.mp4")), 403, "is outside the server's media root"),
        (_body("https://example.invalid/clip.mp4"), 400, "http(s) URLs are off on this server"),
        (_body("data:video/mp4;base64,%%%"), 400, "not valid base64"),
        (_body(big), 413, "over the server's limit of"),
        (_body("a.mp4", max_tokens=200), 400, "the limit is 96, the server's --max-context (96)"),
        (_body("a.mp4", fps=0), 400, "fps: Input should be greater than 0"),
    ]
    limit = (clips / "a.mp4").stat().st_size + 1
    with serve(media_root=str(clips), max_context=96, max_video_bytes=limit) as (url, app):
        for body, status, message in cases:
            got_status, got = _post(url, body)
            assert got_status == status, (message, got)
            assert got["error"]["code"] == status and message in got["error"]["message"], got
            assert "videorope-serve-" not in got["error"]["message"]  # no server-side temporary names leak
            ok_status, ok = _post(url, good)
            assert ok_status == 200 and ok["choices"][0]["message"]["content"], (message, ok)
        rejected = app.state.metrics.registry.get_sample_value("videorope_requests_total", {"outcome": "rejected"})
    assert rejected == len(cases)
    assert not list(clips.parent.glob("**/videorope-serve-*"))


def test_huge_and_slow_uploads_are_bounded(serve, clips):
    with serve(media_root=str(clips), max_video_bytes=1000, upload_timeout_s=1.0) as (url, _):
        reply = _raw(url, _request_head(url, 10**10), b"{", close_after=b"}}")
        assert reply.startswith(b"HTTP/1.1 413") and b"is over the server's limit" in reply
        # chunked, with no length declared: counted as it arrives
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        chunks = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") * 40  # 2.5 MiB > 1 MiB + 1333 bytes
        reply = _raw(url, head, chunks, close_after=b"}}")
        assert reply.startswith(b"HTTP/1.1 413") and b"the request body is over the server's limit" in reply
        # a body that stops arriving: 408 once the upload time is up
        reply = _raw(url, _request_head(url, 500), b'{"model": "tiny", ', close_after=b"}}")
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply
        assert _post(url, _body())[0] == 200  # a text-only request: the videos here are over the 1000-byte limit


def _holding_hook(at_step=1):
    """A step hook that holds each generation at `at_step` until it is cancelled or released; records the jobs."""
    state = {"jobs": [], "reached": threading.Event(), "release": threading.Event()}

    def hook(job, step):
        if job not in state["jobs"]:
            state["jobs"].append(job)
        if step == at_step:
            state["reached"].set()
            while not (job.cancel.is_set() or state["release"].is_set()):
                time.sleep(0.005)

    return hook, state


def test_a_full_queue_answers_429_and_queued_requests_still_complete(serve, clips):
    hook, state = _holding_hook()
    results = {}
    with serve(step_hook=hook, media_root=str(clips), max_queue=1, stream_every=1) as (url, app):
        engine = app.state.engine
        first = threading.Thread(target=lambda: results.setdefault("first", _post(url, _body("a.mp4"))))
        first.start()
        assert state["reached"].wait(60)  # the first request holds the model
        second = threading.Thread(target=lambda: results.setdefault("second", _post(url, _body("b.mp4"))))
        second.start()
        _wait(lambda: engine.depth == 2, "the second request to be queued")
        status, got = _post(url, _body("c.mp4"))
        assert status == 429 and "the queue holds its most (1 waiting requests)" in got["error"]["message"]
        state["release"].set()
        first.join(60)
        second.join(60)
    assert results["first"][0] == results["second"][0] == 200
    first, second = (results[k][1]["choices"][0]["message"]["content"] for k in ("first", "second"))
    assert first != second


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_cancels_its_generation(serve, clips, stream):
    hook, state = _holding_hook()
    body = json.dumps(_body("a.mp4", max_tokens=300, stream=stream)).encode()
    with serve(step_hook=hook, media_root=str(clips), stream_every=1) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(_request_head(url, len(body)) + body)
            if stream:  # the role chunk and the first token's text have arrived
                got = b""
                while got.count(b"data: ") < 2:
                    got += s.recv(65536)
                assert b'"role": "assistant"' in got
            assert state["reached"].wait(60)
        # the connection is closed: the generation held at step 1 is cancelled there
        job = state["jobs"][0]
        _wait(lambda: app.state.engine.depth == 0, "the cancelled generation to end")
        registry = app.state.metrics.registry
        assert registry.get_sample_value("videorope_requests_total", {"outcome": "cancelled"}) == 1
        assert job.cancel.is_set() and 1 <= job.generated <= 2  # stopped at step 1 of 300
        state["release"].set()  # later generations run through
        status, got = _post(url, _body("a.mp4"))  # and the server goes on
        assert status == 200 and got["usage"]["completion_tokens"] >= 1
