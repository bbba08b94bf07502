"""The official OpenAI client against a live server on localhost: answers equal `videorope-trt run`'s, streamed and
not, for every way a video arrives; concurrent clients get their own answers; /v1/models, /health, /metrics."""

import base64
import threading
import urllib.request

import pytest

openai = pytest.importorskip("openai")

QUESTION = "What moves?"


def _client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _messages(url, question=QUESTION):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def _run_answer(ckpt, clip, question, tokens, capsys):
    """What `videorope-trt run` prints for this question (the streamed answer, then a newline)."""
    from videorope_trt.cli import main

    capsys.readouterr()
    assert main(["run", str(ckpt), "--video", str(clip), "--prompt", question, "--max-new-tokens", str(tokens),
                 "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out[:-1]


def _streamed(client, **kw):
    pieces, finish, usage = [], None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(pieces), finish, usage


def test_answers_equal_run_streamed_and_not_for_every_way_a_video_arrives(serve, tiny_ckpt, clips, capsys):
    clip = clips / "a.mp4"
    want = _run_answer(tiny_ckpt, clip, QUESTION, 12, capsys)
    assert len(want) > 3
    data_url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    with serve(media_root=str(clips)) as (url, _):
        client = _client(url)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        for video in (str(clip), "a.mp4", f"file://{clip}", data_url):
            r = client.chat.completions.create(model="tiny", messages=_messages(video), max_tokens=12, temperature=0)
            assert r.choices[0].message.content == want, video[:40]
            assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 12
            text, finish, usage = _streamed(client, model="tiny", messages=_messages(video), max_tokens=12)
            assert (text, finish) == (want, r.choices[0].finish_reason) and usage == r.usage


def test_sampling_options_and_stop_strings(serve, session, clips):
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.sampling import SamplingConfig

    clip = clips / "b.mp4"
    video = session.load_video(clip)
    sampled = session.ask([QUESTION], video, GenerationConfig(max_new_tokens=10, sampling=SamplingConfig(0.8, 0.9, 7)))
    greedy = session.ask([QUESTION], video, GenerationConfig(max_new_tokens=10)).texts[0]
    cut = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    assert cut and greedy.find(cut) > 0
    with serve(media_root=str(clips)) as (url, _):
        client = _client(url)
        r = client.chat.completions.create(model="tiny", messages=_messages("b.mp4"), max_tokens=10, temperature=0.8,
                                           top_p=0.9, seed=7)
        assert r.choices[0].message.content == sampled.texts[0]
        for stream in (False, True):
            kw = dict(model="tiny", messages=_messages("b.mp4"), max_tokens=10, stop=[cut, "never appears"])
            if stream:
                text, finish, _ = _streamed(client, **kw)
            else:
                r = client.chat.completions.create(**kw)
                text, finish = r.choices[0].message.content, r.choices[0].finish_reason
            assert (text, finish) == (greedy[: greedy.find(cut)], "stop")


def test_concurrent_clients_get_their_own_answers(serve, session, clips):
    """Eight clients at once over three videos and three questions, half of them streaming: every answer is the one
    the same request gets alone, none lost or swapped."""
    from videorope_trt.runtime.generate import GenerationConfig

    questions = [QUESTION, "Describe the video.", "How many shapes are there?"]
    cases = [(f"{'abc'[i % 3]}.mp4", questions[(i // 3 + i) % 3], 6 + i % 4, i % 2 == 1) for i in range(8)]
    alone = {}
    for name, question, tokens, _ in cases:
        video = session.load_video(clips / name)
        answer = session.ask([question], video, GenerationConfig(max_new_tokens=tokens))
        alone[(name, question, tokens)] = answer.texts[0]
    assert len(set(alone.values())) > 3  # the answers differ: a swap would show
    got, errors = {}, []

    def ask(i, name, question, tokens, stream):
        try:
            client = _client(url)
            kw = dict(model="tiny", messages=_messages(name, question), max_tokens=tokens)
            if stream:
                got[i] = _streamed(client, **kw)[0]
            else:
                got[i] = client.chat.completions.create(**kw).choices[0].message.content
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    with serve(media_root=str(clips), max_queue=8) as (url, app):
        threads = [threading.Thread(target=ask, args=(i, *case)) for i, case in enumerate(cases)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
        assert app.state.engine.depth == 0
    assert errors == []
    assert {i: got[i] for i in range(8)} == {i: alone[c[:3]] for i, c in enumerate(cases)}
    assert 'videorope_requests_total{outcome="ok"} 8.0' in metrics


def test_health_models_and_metrics(serve, clips):
    import json

    with serve(media_root=str(clips), max_context=4096) as (url, _):
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())
        assert health == {"status": "ok", "model": "tiny", "queue_depth": 0}
        models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=30).read())
        assert [(m["id"], m["max_model_len"]) for m in models["data"]] == [("tiny", 4096)]
        r = _client(url).chat.completions.create(model="tiny", messages=_messages("c.mp4"), max_tokens=5)
        text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['videorope_requests_total{outcome="ok"}']) == 1.0
    assert float(lines["videorope_generated_tokens_total"]) == r.usage.completion_tokens
    assert float(lines["videorope_time_to_first_token_seconds_count"]) == 1.0
    assert float(lines["videorope_vision_milliseconds_count"]) == 1.0
    assert float(lines["videorope_video_decode_milliseconds_count"]) == 1.0
    assert float(lines["videorope_queue_depth"]) == 0.0
    assert float(lines['videorope_memory_bytes{kind="host_rss"}']) > 1e7


def test_serve_command_starts_a_server_that_answers(tiny_ckpt, session, clips):
    """`videorope-trt serve` as a user runs it: its own process, its options from the command line."""
    import json
    import socket
    import subprocess
    import sys
    import time

    from videorope_trt.runtime.generate import GenerationConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "videorope_trt.cli", "serve", str(tiny_ckpt), "--device", "cpu", "--port", str(port),
           "--media-root", str(clips), "--model-id", "tiny", "--max-context", "2048", "--max-queue", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                health = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert health["status"] == "ok"
        models = _client(url).models.list().data
        assert [(m.id, m.max_model_len) for m in models] == [("tiny", 2048)]
        r = _client(url).chat.completions.create(model="tiny", messages=_messages("c.mp4"), max_tokens=7)
        want = session.ask([QUESTION], session.load_video(clips / "c.mp4"), GenerationConfig(max_new_tokens=7))
        assert r.choices[0].message.content == want.texts[0]
    finally:
        proc.terminate()
        proc.wait(30)
