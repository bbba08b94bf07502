"""The batch as a Ray Data job: items → an actor pool of `Answerer`s (one Session each, one GPU each where the
cluster has GPUs) → records streamed back to the driver, which writes them (`batch.run_batch`).

Fault tolerance is Ray's: a worker process that dies takes its actor with it; the pool restarts the actor
(`max_restarts`) and runs the lost block again on it (`max_task_retries`). Only a finished block's records reach
the driver, so a retried item is written once.
"""

from __future__ import annotations

#: each Ray Data block holds this many items at most: a lost worker costs at most one block of work again
ITEMS_PER_BLOCK = 1
MAX_RESTARTS = 3  # per actor: a worker that keeps dying stops the job instead of looping
MAX_TASK_RETRIES = 3


def connect(address: str | None = None) -> bool:
    """ray.init on `address` (None: the cluster RAY_ADDRESS names, else a new local one) unless Ray is initialized
    already in this process. True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or None)
    return True


def worker_resources() -> dict:
    """One GPU per worker on a cluster with GPUs, else one CPU."""
    import ray

    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def fault_tolerance() -> dict:
    """The actors' restart and retry settings (as Ray Data's `ray_remote_args_fn`: read before each actor starts)."""
    return {"max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES}


def _plain(value):
    """Arrow's and numpy's values as JSON's."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def results(options, items, address: str | None = None, workers: int | None = None, runtime_env: dict | None = None):
    """Yield one record per item, in the order they finish."""
    import ray

    from videorope_trt.serve.answerer import Answerer

    connect(address)
    resources = worker_resources()
    size = workers or max(1, int(ray.cluster_resources().get("GPU", 0)))
    blocks = max(1, min(len(items), len(items) // ITEMS_PER_BLOCK))
    ds = ray.data.from_items(list(items), override_num_blocks=blocks)
    ds = ds.map(Answerer, fn_constructor_kwargs={"options": options}, compute=ray.data.ActorPoolStrategy(size=size),
                ray_remote_args_fn=fault_tolerance, runtime_env=runtime_env, num_cpus=resources.get("num_cpus"),
                num_gpus=resources.get("num_gpus"))
    for row in ds.iter_rows():
        yield {k: _plain(v) for k, v in dict(row).items()}
