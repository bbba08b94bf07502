"""Serving: an OpenAI-compatible HTTP endpoint over one opened model (`app.build_app`), the same app as a Ray Serve
deployment (`ray_app`), and batch answering of (video, prompt) pairs in one process or as a Ray Data job (`batch`).

Sits above the runtime: it imports artifact, media, models, runtime and build (for the memory plan), never export,
calibration or the command line. FastAPI, uvicorn, prometheus_client and Ray are imported where they are used, so
every module here imports without the `serve` and `ray` extras.
"""
