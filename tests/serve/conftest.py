"""Fixtures for the serving tests: synthetic clips, one opened session per worker, and live servers on localhost
(uvicorn in a thread of the test process, on a port the OS picks), each stopped by the test that started it."""

import contextlib
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (requirements/serve.txt) is not installed")


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Three short synthetic videos of different lengths and sizes (different video token counts)."""
    from videorope_trt.media.synthetic import make_synthetic_video

    root = tmp_path_factory.mktemp("clips")
    specs = {"a.mp4": (2, 112, 84), "b.mp4": (3, 84, 112), "c.mp4": (1, 112, 112)}
    for name, (seconds, w, h) in specs.items():
        make_synthetic_video(root / name, seconds=seconds, fps=4, width=w, height=h)
    return root


@pytest.fixture(scope="session")
def session(tiny_ckpt):
    from videorope_trt.runtime.session import Session

    return Session.open(tiny_ckpt, "torch", device="cpu", compile=False)


@contextlib.contextmanager
def live_server(app, timeout: float = 60.0):
    """Serve `app` on 127.0.0.1 in a thread; yields the base URL (http://127.0.0.1:PORT)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@pytest.fixture
def serve(session):
    """serve(**options) -> context manager yielding (base URL, app) for a server over the tiny checkpoint."""
    from videorope_trt.serve.app import build_app
    from videorope_trt.serve.options import ServeOptions

    @contextlib.contextmanager
    def start(step_hook=None, **options):
        opts = ServeOptions(model=str(session.source), model_id="tiny", **options)
        app = build_app(opts, session=session, step_hook=step_hook)
        with live_server(app) as url:
            yield url, app

    return start
