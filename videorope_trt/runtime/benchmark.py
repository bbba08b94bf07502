"""`bench`'s measurements: generations over synthetic videos that fill a given context, timed phase by phase,
with the peak memory, written as JSON and a plot of where the time goes."""

from __future__ import annotations

import io
import json
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic


def parse_contexts(text: str) -> list:
    """"8k,16k,1000" → [8192, 16384, 1000]."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        scale = 1024 if part.endswith("k") else 1
        try:
            out.append(int(float(part.rstrip("k")) * scale))
        except ValueError:
            raise ValueError(f"--contexts: {part!r} is not a length such as 8k or 8192") from None
    if not out or min(out) < 64:
        raise ValueError(f"--contexts: expected lengths >= 64 such as 8k,16k, got {text!r}")
    return out


class SyntheticPatches:
    """Random patch rows made on demand, so a long synthetic video costs no host memory until encoded."""

    def __init__(self, rows: int, width: int, seed: int = 0):
        self.shape = (rows, width)
        self.seed = seed

    def __getitem__(self, index):
        import numpy as np

        start, stop, _ = index.indices(self.shape[0])
        rng = np.random.default_rng([self.seed, start])
        return rng.standard_normal((stop - start, self.shape[1]), dtype=np.float32)


class _Video:
    def __init__(self, pixel_values, grid_thw):
        self.pixel_values, self.grid_thw = pixel_values, grid_thw


def synthetic_video(context: int, text_tokens: int, processor, frame_size: int, merge: int):
    """A video whose tokens fill `context` minus the text: (video, frames, video tokens). `processor`: the model's
    `media.video.ProcessorConfig`."""
    patch, tp = processor.patch_size, processor.temporal_patch_size
    side = max(merge, frame_size // patch // merge * merge)
    per_slice = side * side // merge**2
    t = max(1, (context - text_tokens) // per_slice)
    pixels = SyntheticPatches(t * side * side, 3 * tp * patch * patch)
    return _Video(pixels, (t, side, side)), t * tp, t * per_slice


def _peak_memory(device) -> dict:
    import resource

    import torch

    out = {"peak_host_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if str(device).startswith("cuda"):
        out["peak_device_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return out


def bench_context(session, context: int, frame_size: int, config) -> dict:
    """One generation that fills a KV cache of `context` tokens: a synthetic video's prompt takes `context` less the
    decoded tokens (`config.max_new_tokens`; EOS does not stop them). Its timings, rates and peak memory."""
    from dataclasses import replace

    from videorope_trt.media import prompt
    from videorope_trt.runtime.generate import generate

    backend, tokenizer = session.backend, session.tokenizer
    text = len(prompt.prompt_ids(tokenizer, "Describe the video.", 0)) + 2
    video, frames, n_video = synthetic_video(context - config.max_new_tokens, text, session.processor, frame_size,
                                             backend.info.spatial_merge_size)
    rows = [prompt.prompt_ids(tokenizer, "Describe the video.", n_video)]
    if len(rows[0]) + config.max_new_tokens > context:
        raise ValueError(f"a context of {context} tokens holds no prompt with a video of {frame_size}x{frame_size} "
                         f"frames ({len(rows[0])} tokens at least) and {config.max_new_tokens} decoded tokens; bench a "
                         "longer context, a smaller --frame-size or fewer --decode-tokens")
    tm = generate(backend, rows, video, replace(config, stop_at_eos=False)).timings
    return {
        "context": context, "prompt_tokens": len(rows[0]), "frames": frames, **tm,
        "vision_ms_per_frame": 1000 * tm["vision_s"] / frames,
        "prefill_tok_s": len(rows[0]) / tm["prefill_s"],
        "decode_tok_s": tm["decode_tokens"] / max(tm["decode_s"], 1e-9),
        **_peak_memory(backend.device),
    }


def write_bench(results: list, meta: dict, json_path: Path, plot_path: Path) -> None:
    """JSON and a PNG (time split into vision / setup / prefill / decode per context), each via a temporary name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_atomic(json_path, json.dumps({**meta, "results": results}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['context'] // 1024}k" if r["context"] >= 1024 else str(r["context"]) for r in results]
    bottom = [0.0] * len(results)
    for key in ("vision_s", "setup_s", "prefill_s", "decode_s"):
        vals = [r.get(key, 0.0) for r in results]
        ax.bar(labels, vals, bottom=bottom, label=key[:-2])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("seconds")
    ax.set_title(f"{meta['backend']} on {meta['device']}: where time goes")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_atomic(plot_path, buf.getvalue())
