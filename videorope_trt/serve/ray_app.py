"""The server as a Ray Serve application: the same FastAPI app (`app.build_app`) in every replica, one replica per
GPU (one CPU each on a cluster without GPUs), Ray Serve's proxy in front routing requests to them.

Each replica opens its own Session and runs its own engine (one generation at a time, its own bounded queue):
Serve sends a replica at most `max_queue + 1` requests at once and holds the rest at the proxy. /metrics and
/health answer for the replica a request lands on.
"""

from __future__ import annotations


def _server_class():
    from ray import serve

    @serve.ingress()
    class VideoRopeServer:
        """A Serve replica: opens the model and builds the app; Serve asks for the app once the replica is up."""

        def __init__(self, options):
            from videorope_trt.serve.app import build_app

            self._videorope_app = build_app(options)  # not `app`: the Serve wrapper owns that name

        def __serve_build_asgi_app__(self):
            return self._videorope_app

    return VideoRopeServer


def application(options, replicas: int = 1, gpus: bool | None = None):
    """The bound Serve application: `replicas` replicas of the server, each with one GPU (`gpus`; None: where the
    cluster has GPUs) or one CPU."""
    import ray
    from ray import serve

    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if gpus is None:
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
    actor = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    deployment = serve.deployment(_server_class(), name="videorope", num_replicas=replicas, ray_actor_options=actor,
                                  max_ongoing_requests=options.max_queue + 1)
    return deployment.bind(options)


class ProxyNotStarted(RuntimeError):
    """Serve's HTTP proxy did not come up (the message says which setting gives it longer)."""


#: Ray Serve's setting for how long a starting proxy may take before its controller kills it
READY_CHECK_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"


def run(options, host: str, port: int, replicas: int, address: str | None = None, blocking: bool = True):
    """Connect to (or start) Ray, start Serve's proxy on host:port, deploy, and (`blocking`) serve until stopped."""
    import ray
    from ray import serve

    from videorope_trt.serve.batch_ray import connect

    connect(address)
    try:
        serve.start(http_options={"host": host, "port": port})
    except ray.exceptions.ActorDiedError as e:
        # Serve's controller kills a proxy that is not ready within its check, and start() then fails with this
        raise ProxyNotStarted(f"Ray Serve's proxy on {host}:{port} did not start ({type(e).__name__}): on a busy "
                              f"or small machine, start the cluster with {READY_CHECK_ENV}=60 in its environment "
                              "(Ray's default is 5 seconds)") from None
    return serve.run(application(options, replicas), name="videorope", route_prefix="/", blocking=blocking)
