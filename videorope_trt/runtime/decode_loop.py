"""The decode loop: sample, feed back, repeat, with the host out of the device's way.

Per step the device picks the next token (`Sampler`), swaps in the pad token for finished samples, marks samples
that just hit a stop token, records both in a history buffer, and the backend runs the next step on it: nothing
comes back to the host until a read-back. Read-backs (after the first token, every `sync_every` steps, at the
end) copy the new history rows into page-locked memory and queue the next step before waiting for that copy, so
the device has a step to run while the host streams tokens.

On CUDA with greedy sampling the per-step bookkeeping (`Feed`: argmax, the pad and stop checks, the history
writes) is one CUDA graph, captured at the first step whose logits come from the same buffer as the step before
(a graphed backend's), rather than about ten small kernels launched one by one between two replays of the
decode step; what it adds to a step is measured by bench/bench_decode_step.py (the "loop" figures;
docs/benchmark-log.md, "32k: the decode loop on the device, tuned compiles", run 7).
"""

from __future__ import annotations


def _no_bar(**_):
    class _Bar:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return _Bar()


class Feed:
    """The device side of each step: logits (B, V) → the next tokens (B,) int64 (the pad token once a sample is
    done), recorded in `history` / `active` (max_new_tokens, B) at the device's own step counter. `graph`: capture
    it where it can be (False: always eager)."""

    def __init__(self, sampler, batch: int, max_new_tokens: int, pad_id: int, device, graph: bool = True):
        import torch

        self.sampler = sampler
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.pad = torch.full((batch,), pad_id, dtype=torch.int64, device=device)
        self.stops = torch.tensor(sampler.config.stop_token_ids, dtype=torch.int64, device=device)
        self.history = torch.empty((max_new_tokens, batch), dtype=torch.int64, device=device)
        self.active = torch.empty((max_new_tokens, batch), dtype=torch.bool, device=device)
        self.step = torch.zeros(1, dtype=torch.int64, device=device)
        self.tokens = torch.empty(batch, dtype=torch.int64, device=device)
        # graphed only where replaying is exact: greedy (no generator state to carry) on CUDA
        self._graphable = graph and sampler.config.greedy and torch.device(device).type == "cuda"
        self._graph = self._source = self._captured = None
        self.calls = 0

    def _step(self, logits):
        import torch

        tok = torch.where(self.done, self.pad, self.sampler(logits).to(torch.int64))
        self.done |= (tok[:, None] == self.stops).any(-1)
        self.history.index_copy_(0, self.step, tok[None])
        self.active.index_copy_(0, self.step, ~self.done[None])
        self.step += 1
        self.tokens.copy_(tok)
        return self.tokens

    def __call__(self, logits):
        if self.calls == self.history.shape[0]:  # on CUDA an index past the history is a device-side assert
            raise ValueError(f"decode: the feed holds {self.calls} steps (max_new_tokens) and got one more")
        self.calls += 1
        # the graph reads the buffer it was captured on: replayed only for logits in that same buffer
        source = (logits.data_ptr(), logits.shape, logits.stride(), logits.dtype)
        if self._graph is not None:
            if source == self._captured:
                self._graph.replay()
                return self.tokens
        elif self._graphable and source == self._source:  # the same buffer twice in a row
            return self._capture(logits, source)
        self._source = source
        return self._step(logits)

    def _capture(self, logits, source):
        import torch

        # on a side stream and without `torch.cuda.graph`'s device sync: the decode step before is still running
        stream, current = torch.cuda.Stream(logits.device), torch.cuda.current_stream(logits.device)
        stream.wait_stream(current)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                self._step(logits)
            finally:
                graph.capture_end()
        current.wait_stream(stream)
        self._graph, self._captured = graph, source
        graph.replay()  # capturing ran nothing
        return self.tokens


class _Readback:
    """The history rows [start, stop) on their way to the host: copied into page-locked memory (on CUDA) without
    waiting, so the caller can queue more work before `wait`."""

    def __init__(self, feed: Feed, start: int, stop: int):
        import torch

        self.start = start
        tokens, active = feed.history[start:stop], feed.active[start:stop]
        pinned = tokens.is_cuda
        self.tokens = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=pinned)
        self.active = torch.empty(active.shape, dtype=active.dtype, pin_memory=pinned)
        self.tokens.copy_(tokens, non_blocking=pinned)
        self.active.copy_(active, non_blocking=pinned)
        self.event = None
        if pinned:  # recorded on the stream of the history's own device, where the copies were queued
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(tokens.device))

    def wait(self, out, on_token) -> bool:
        """Record and stream the rows (the sync); True once no sample is active."""
        if self.event is not None:
            self.event.synchronize()
        tokens, active = self.tokens.tolist(), self.active.tolist()
        for k, (row, act) in enumerate(zip(tokens, active)):
            for b, (t, a) in enumerate(zip(row, act)):
                if a:
                    out[b].append(t)
            if on_token is not None:
                on_token(self.start + k, row, act)
        return not any(active[-1])


def decode(backend, sampler, logits, max_new_tokens: int, on_token=None, bar=_no_bar, sync_every: int = 16):
    """Sample, feed back, repeat, from the prefill's `logits` (after `backend.begin_decode(*decode_inputs(...))`).

    The host reads the tokens after the first one, then every `sync_every` steps, where it streams them
    (`on_token(step, tokens, active)`) and stops once every sample is done. Returns the generated ids per sample
    (stop token excluded). A finished sample keeps stepping with the pad token (the batch moves together) but
    records nothing more. The step after a read-back is queued before the read-back is waited for: when that
    read-back finds every sample done, the cache has taken one step more than the tokens returned.
    """
    batch = logits.shape[0]
    out = [[] for _ in range(batch)]
    feed = Feed(sampler, batch, max_new_tokens, backend.info.pad_token_id, logits.device)
    progress, read = bar(total=max_new_tokens, desc="decode", unit="tok"), 0
    for step in range(max_new_tokens):
        tok = feed(logits)
        last = step == max_new_tokens - 1
        if not (step == 0 or last or (step + 1) % sync_every == 0):
            logits = backend.decode_step(tok)
            continue
        pending = _Readback(feed, read, step + 1)
        if not last:
            logits = backend.decode_step(tok)
        finished = pending.wait(out, on_token)
        progress.update(step + 1 - read)
        read = step + 1
        if finished or last:
            break
    progress.close()
    return out
