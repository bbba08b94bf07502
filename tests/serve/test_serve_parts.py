"""The serving pieces without a server: the chat prompt (equal to `run`'s), stop strings in streamed text, request
parsing, the video fetcher's bounds, the admission limits."""

import base64
import http.server
import threading

import pytest

from videorope_trt.media import prompt
from videorope_trt.serve import protocol
from videorope_trt.serve.chat import AnswerText, StopText, conversation, prompt_row
from videorope_trt.serve.fetch import FetchError, FetchLimits, fetch_video


def _request(**body):
    return protocol.ChatRequest.model_validate({"model": "tiny", **body})


def _user(*parts):
    return {"role": "user", "content": list(parts)}


VIDEO = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}


@pytest.mark.parametrize("question", ["What moves?", " leading space", "line\nbreak", "très vite ✓"])
@pytest.mark.parametrize("video_tokens", [0, 18])
def test_one_turn_prompt_is_the_ids_run_builds(session, question, video_tokens):
    parts = ([VIDEO] if video_tokens else []) + [{"type": "text", "text": question}]
    conv = conversation(_request(messages=[_user(*parts)]).messages)
    want = prompt.prompt_ids(session.tokenizer, question, video_tokens)
    assert prompt_row(session.tokenizer, conv, video_tokens) == want
    # a plain-string content and an explicit default system message give the same ids
    if not video_tokens:
        plain = _request(messages=[{"role": "system", "content": prompt.DEFAULT_SYSTEM},
                                   {"role": "user", "content": question}])
        assert prompt_row(session.tokenizer, conversation(plain.messages), 0) == want


def test_multi_turn_prompt_holds_every_turn_in_order(session):
    messages = [{"role": "system", "content": "Be brief."}, _user(VIDEO, {"type": "text", "text": "What moves?"}),
                {"role": "assistant", "content": "A circle."}, {"role": "user", "content": "Which colour?"}]
    conv = conversation(_request(messages=messages).messages)
    ids = prompt_row(session.tokenizer, conv, 4)
    text = session.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert text.endswith("What moves?<|im_end|>\n<|im_start|>assistant\nA circle.<|im_end|>\n<|im_start|>user\n"
                         "Which colour?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|video_pad|>") == 4


@pytest.mark.parametrize("messages, expected", [
    ([{"role": "assistant", "content": "hi"}], "the last message must be the user's"),
    ([_user(VIDEO), _user(VIDEO)], "one video per request; this is the second"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     "messages.1: a system message must come before"),
    ([{"role": "assistant", "content": [VIDEO]}, {"role": "user", "content": "a"}],
     "a video belongs in a user message"),
])
def test_bad_turn_structures_are_named(messages, expected):
    with pytest.raises(ValueError, match=expected):
        conversation(_request(messages=messages).messages)


def test_stop_strings_cut_the_text_and_never_stream_past_them():
    pieces = []
    answer = AnswerText(("STOP", "xyz"), pieces.append)
    answer.write("abc S")  # "S" may start "STOP": held back
    assert "".join(pieces) == "abc "
    answer.write("T")
    with pytest.raises(StopText):
        answer.write("OP and more")
    assert answer.text == "abc " and "".join(pieces) == "abc " and answer.stopped


def test_text_held_back_for_a_stop_string_is_released_when_it_is_not_one():
    pieces = []
    answer = AnswerText(("STOP",), pieces.append)
    for piece in ("a S", "TO", "x b"):
        answer.write(piece)
    answer.finish("a STOx b")
    assert "".join(pieces) == "a STOx b" == answer.text and not answer.stopped


@pytest.mark.parametrize("body, expected", [
    (b"{not json", "the body is not valid JSON"),
    (b"", "the body is empty"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 1}',
     "unknown field 'frequency_penalty'"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x", '
     b'"detail": "low"}}]}]}', "unknown field 'messages.0.content.0.video_url.detail'"),
    (b'{"model": "tiny", "messages": []}', "messages: List should have at least 1 item"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
     "temperature: Input should"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n: Input should be less than"),
    (b'{"model": "tiny", "messages": [{"role": "tool", "content": "hi"}]}', "messages.0.role: Input should be"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
     "messages.0.content.0: Input tag 'image_url' found using 'type' does not match any of the expected tags"),
])
def test_bad_requests_name_the_field(body, expected):
    with pytest.raises(ValueError) as e:
        protocol.parse_request(body)
    assert expected in str(e.value)


def _limits(tmp_path, **kw):
    return FetchLimits(**{"max_bytes": 1 << 20, "timeout_s": 10.0, "tmp_dir": str(tmp_path), **kw})


def test_data_urls_are_decoded_into_a_temporary_file_within_the_size_bound(tmp_path):
    data = bytes(range(256)) * 8
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    got = fetch_video(url, _limits(tmp_path))
    assert got.temporary and got.path.suffix == ".mp4" and got.path.read_bytes() == data
    got.cleanup()
    assert not got.path.exists()
    with pytest.raises(FetchError, match="over the server's limit of 1000 bytes") as e:
        fetch_video(url, _limits(tmp_path, max_bytes=1000))
    assert e.value.status == 413
    with pytest.raises(FetchError, match="not valid base64"):
        fetch_video("data:video/mp4;base64,@@@@", _limits(tmp_path))
    with pytest.raises(FetchError, match="must be base64"):
        fetch_video("data:video/mp4,raw", _limits(tmp_path))


def test_local_files_are_read_only_under_the_media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"x" * 10)
    (tmp_path / "secret.mp4").write_bytes(b"y")
    with pytest.raises(FetchError, match="local files are off") as e:
        fetch_video(str(root / "clip.mp4"), _limits(tmp_path))
    assert e.value.status == 403
    limits = _limits(tmp_path, media_root=str(root))
    for url in (str(root / "clip.mp4"), "clip.mp4", f"file://{root}/clip.mp4"):
        got = fetch_video(url, limits)
        assert got.path == root / "clip.mp4" and not got.temporary
    for url in (str(tmp_path / "secret.mp4"), "../secret.mp4", f"file://{tmp_path}/secret.mp4"):
        with pytest.raises(FetchError, match="outside the server's media root"):
            fetch_video(url, limits)
    with pytest.raises(FetchError, match="no file nope.mp4"):
        fetch_video("nope.mp4", limits)
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetch_video("ftp://host/clip.mp4", limits)


def test_http_urls_are_off_unless_allowed_and_bounded_when_on(tmp_path):
    body = b"v" * 5000

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    try:
        with pytest.raises(FetchError, match="http\\(s\\) URLs are off on this server"):
            fetch_video(url, _limits(tmp_path))
        got = fetch_video(url, _limits(tmp_path, allow_http=True))
        assert got.path.read_bytes() == body and got.temporary
        got.cleanup()
        with pytest.raises(FetchError, match="over the server's limit") as e:
            fetch_video(url, _limits(tmp_path, allow_http=True, max_bytes=1000))
        assert e.value.status == 413
    finally:
        server.shutdown()
    assert not list(tmp_path.glob("videorope-serve-*"))  # nothing left behind


def test_limits_name_where_they_come_from(session):
    from videorope_trt.serve.limits import check_fits, session_context_limit

    own = session_context_limit(session)
    assert own.tokens == session.info.max_positions == 32768 and "max_position_embeddings" in own.source
    configured = session_context_limit(session, 100)
    assert configured.tokens == 100 and "--max-context (100)" in configured.source
    assert session_context_limit(session, 10**6) == own  # a configured maximum only ever lowers the limit
    check_fits(session, configured, 60, 40, None)
    with pytest.raises(ValueError, match="needs 101 tokens of context: 60 of prompt and max_tokens 41; the limit "
                                         "is 100, the server's --max-context"):
        check_fits(session, configured, 60, 41, None)


def test_video_cost_from_metadata_equals_the_decoded_video(session, clips):
    from videorope_trt.serve.limits import video_cost

    for clip in sorted(clips.iterdir()):
        for fps, max_frames in ((2.0, None), (4.0, 3)):
            cost = video_cost(session, clip, fps, max_frames)
            video = session.load_video(clip, fps=fps, max_frames=max_frames)
            assert cost.tokens == session.video_tokens(video) > 0, clip.name
