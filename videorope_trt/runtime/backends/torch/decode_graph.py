"""The whole decode step of a `static_decoder.StaticCacheDecoder` as one CUDA graph, replayed per token."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videorope_trt.runtime.backends.torch.static_decoder import StaticCacheDecoder, decode_bias


class GraphedDecode:
    """The whole decode step in one CUDA graph: token ids → embedding → positions → mask → layers → logits, and
    the cache position advanced, all on the device.

    Positions follow `rope.decode_positions`: offset + step × cache_position (offset = rope_deltas on every
    axis); the mask allows the prompt's real tokens, every generated one, and no row past the cache position.
    So the host only copies the next token ids into `tokens` (device to device) and replays: no host-to-device
    copy and no sync per step. `begin` sets the buffers for one generation.

    It can be built while the device still runs the prefill: the warm-up steps are queued after it and write
    their K/V into the cache's last row (no prompt row: a prompt leaves room for at least one generated token; a
    decode step writes its own row before attending to it), and the capture neither waits for the device nor
    empties the allocator's cache (`torch.cuda.graph` does both). Only the first capture in a process waits: its
    warm-up tunes the kernels, which times them on the device.
    """

    def __init__(self, dec: StaticCacheDecoder, batch: int, num_axes: int, warmup: int = 1, capture: bool = True):
        device, rows = dec.keys[0].device, dec.rows
        self.dec = dec
        self.tokens = torch.zeros(batch, dtype=torch.int64, device=device)
        self.offset = torch.zeros((num_axes, batch, 1), dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self.mask = torch.zeros((batch, rows), dtype=torch.bool, device=device)
        self.rows = torch.arange(rows, device=device)
        self.cache_position = torch.zeros(1, dtype=torch.int64, device=device)
        self.graph = None
        if not capture:  # the same step run eagerly (checks on the CPU)
            return
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self.cache_position.fill_(rows - 1)
                self._step()
            self.graph = torch.cuda.CUDAGraph()
            self.graph.capture_begin()
            try:
                self.logits = self._step()
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream(device).wait_stream(stream)

    def _step(self):
        dec = self.dec
        embeds = F.embedding(self.tokens[:, None], dec.model.text_model.embed_tokens.weight)
        positions = self.offset + self.step * self.cache_position.float()
        bias = decode_bias(self.mask & (self.rows <= self.cache_position))
        logits = dec.layers_forward(embeds, positions, bias, self.cache_position, dec.rows)
        self.cache_position.add_(1)
        return logits

    def begin(self, attention_mask, offset, step: float, length: int):
        """attention_mask (B, capacity) for the prompt and every later token; offset (A, B, 1); decoding from
        cache position `length`."""
        self.mask.zero_()
        self.mask[:, : attention_mask.shape[1]] = attention_mask.bool()
        self.offset.copy_(offset)
        self.step.fill_(step)
        self.cache_position.fill_(length)

    def __call__(self, tokens):
        """tokens (B,) int64 on the device → the next logits (B, vocab) f32, valid until the next call."""
        self.tokens.copy_(tokens)
        if self.graph is None:
            return self._step()
        self.graph.replay()
        return self.logits
