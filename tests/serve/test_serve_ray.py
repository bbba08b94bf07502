"""Ray on this machine (a local cluster of 2 CPUs): `batch` as a Ray Data job gives the single-process answers, and a
worker process killed on its first item has its work retried with no duplicate in the output; the server as a Ray
Serve deployment answers the OpenAI client as the single-process server does."""

import json
import socket

import pytest

ray = pytest.importorskip("ray", reason="the ray extra (requirements/serve.txt) is not installed")

from videorope_trt.serve.answerer import CRASH_MARKER_ENV, BatchOptions  # noqa: E402  after the ray skip
from videorope_trt.serve.batch import grid_items, run_batch  # noqa: E402

TOKENS = 5


@pytest.fixture
def local_ray(tmp_path, monkeypatch):
    from videorope_trt.serve.ray_app import READY_CHECK_ENV

    # the local cluster inherits this environment: a proxy starting on a loaded 2-core machine can take longer than
    # Serve's default ready check (5 s), after which the controller kills it and serve.start fails
    monkeypatch.setenv(READY_CHECK_ENV, "120")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_batch_equals_the_single_process_batch_and_survives_a_killed_worker(local_ray, tiny_ckpt, clips, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What moves?\nDescribe the video.\n")
    items = grid_items(clips, prompts)
    options = BatchOptions(model=str(tiny_ckpt), backend_options={"device": "cpu", "compile": False},
                           max_new_tokens=TOKENS)
    local = run_batch(options, items, tmp_path / "local.jsonl")
    marker = tmp_path / "crashed"
    summary = run_batch(options, items, tmp_path / "ray.jsonl", use_ray=True, workers=1,
                        runtime_env={"env_vars": {CRASH_MARKER_ENV: str(marker)}})
    assert marker.exists()  # a worker process did exit on its first item
    assert (summary["answered"], summary["errors"], summary["lines"]) == (local["answered"], 0, 6)
    lines = (tmp_path / "ray.jsonl").read_text().splitlines()
    assert len({json.loads(line)["key"] for line in lines}) == len(lines) == 6
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_deployment_answers_as_the_single_process_server(local_ray, tiny_ckpt, session, clips):
    import openai
    from ray import serve

    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.serve import ray_app
    from videorope_trt.serve.options import ServeOptions

    want = session.ask(["What moves?"], session.load_video(clips / "a.mp4"), GenerationConfig(max_new_tokens=TOKENS))
    options = ServeOptions(model=str(tiny_ckpt), model_id="tiny", media_root=str(clips),
                           backend_options={"device": "cpu", "compile": False})
    port = _free_port()
    ray_app.run(options, "127.0.0.1", port, replicas=1, blocking=False)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "a.mp4"}},
                                                 {"type": "text", "text": "What moves?"}]}]
        r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=TOKENS)
        assert r.choices[0].message.content == want.texts[0]
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=TOKENS, stream=True) if c.choices]
        assert "".join(pieces) == want.texts[0]
        with pytest.raises(openai.BadRequestError, match="unknown field 'bogus'"):
            client.chat.completions.create(model="tiny", messages=messages, extra_body={"bogus": 1})
    finally:
        serve.shutdown()



def test_a_proxy_killed_at_start_is_one_clear_error(monkeypatch):
    """Serve's controller kills a proxy not ready within its check, and serve.start then raises ActorDiedError (seen
    on a loaded 2-core machine); `run` turns it into an error naming the setting that gives the proxy longer."""
    from ray import serve

    from videorope_trt.serve import batch_ray, ray_app

    def killed(**_):
        raise ray.exceptions.ActorDiedError()

    monkeypatch.setattr(batch_ray, "connect", lambda address=None: False)
    monkeypatch.setattr(serve, "start", killed)
    with pytest.raises(ray_app.ProxyNotStarted, match="RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=60"):
        ray_app.run(None, "127.0.0.1", 8000, replicas=1, blocking=False)
