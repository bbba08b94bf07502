"""The decode loop's device bookkeeping (`runtime/decode_loop.py`) against a plain Python loop over the same logits."""

from types import SimpleNamespace

import pytest
import torch

from videorope_trt.runtime.decode_loop import Feed, decode
from videorope_trt.runtime.sampling import Sampler, SamplingConfig

PAD, STOP, OTHER_STOP, VOCAB = 0, 7, 9, 16


def _script(batch: int, steps: int, seed: int = 0):
    """Logits per step whose argmax is known: sample 0 hits the stop token at step 3, sample 1 (if any) the other
    stop token at step 5 (if any)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, batch, VOCAB, generator=g)
    logits[:, :, [STOP, OTHER_STOP]] = -10.0
    logits[3, 0, STOP] = 10.0
    if batch > 1 and steps > 5:
        logits[5, 1, OTHER_STOP] = 10.0
    return logits


def _plain(logits):
    """What the loop must record: argmax per step, the pad token after a stop, a sample inactive from its stop on."""
    done, tokens, active = [False] * logits.shape[1], [], []
    for step in logits:
        row = [PAD if d else int(t) for d, t in zip(done, step.argmax(-1))]
        done = [d or t in (STOP, OTHER_STOP) for d, t in zip(done, row)]
        tokens.append(row)
        active.append([not d for d in done])
    return tokens, active


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_feed_records_what_a_plain_loop_does(device):
    """The logits arrive mostly in one buffer rewritten per step, as a graphed backend's: on CUDA the feed is
    captured at its second step on that buffer and replayed for it; two steps in another buffer run eagerly."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    script = _script(batch=2, steps=8)
    sampler = Sampler(SamplingConfig(stop_token_ids=(STOP, OTHER_STOP)), device=device)
    feed = Feed(sampler, batch=2, max_new_tokens=8, pad_id=PAD, device=device)
    main, other = torch.empty(2, VOCAB, device=device), torch.empty(2, VOCAB, device=device)
    fed = []
    for k, step in enumerate(script):
        buffer = other if k in (4, 5) else main
        buffer.copy_(step)
        fed.append(feed(buffer).tolist())
    want_tokens, want_active = _plain(script)
    assert fed == want_tokens
    assert feed.history.tolist() == want_tokens and feed.active.tolist() == want_active
    assert (feed._graph is not None) == (device == "cuda")
    assert want_active[-1] == [False, False]  # both stop tokens were hit
    with pytest.raises(ValueError, match="holds 8 steps"):
        feed(main)


class _ScriptedBackend:
    """decode_step hands back the next scripted logits (a fresh tensor each time) and counts its calls."""

    def __init__(self, script):
        self.script, self.calls = script, 0
        self.info = SimpleNamespace(pad_token_id=PAD)

    def decode_step(self, tokens):
        self.calls += 1
        return self.script[self.calls].clone()


@pytest.mark.parametrize("sync_every", [1, 2, 16])
def test_decode_streams_every_step_and_stops_after_the_read_back_that_finds_all_done(sync_every):
    script = _script(batch=1, steps=8)
    backend, seen = _ScriptedBackend(script), []
    sampler = Sampler(SamplingConfig(stop_token_ids=(STOP, OTHER_STOP)))
    out = decode(backend, sampler, script[0].clone(), 8, lambda s, t, a: seen.append((s, t, a)), sync_every=sync_every)
    tokens, active = _plain(script[:, :1])
    assert out == [[t[0] for t, a in zip(tokens, active) if a[0]]]  # stop token excluded
    stopped_at = {1: 3, 2: 3, 16: 7}[sync_every]  # the first read-back at or after the stop (step 3), or the end
    assert [s for s, _, _ in seen] == list(range(stopped_at + 1))
    # the step after a read-back is queued before it is waited for: one more than the steps read, except at the end
    assert backend.calls == (stopped_at + 1 if stopped_at < 7 else 7)


def test_one_new_token_takes_no_step():
    script = _script(batch=1, steps=4)
    backend, seen = _ScriptedBackend(script), []
    out = decode(backend, Sampler(), script[0].clone(), 1, lambda s, t, a: seen.append(s))
    assert out == [[int(script[0, 0].argmax())]] and seen == [0] and backend.calls == 0
