"""Generation on the tiny checkpoint against a slow, obviously-right reference: the model's own one-shot
forward over the whole sequence, recomputed from scratch for every new token (no cache, no chunks)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videorope_trt import rope
from videorope_trt.media import prompt
from videorope_trt.runtime import streaming
from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
from videorope_trt.runtime.generate import (
    GenerationConfig,
    build_positions,
    chunk_embeds,
    encode_video,
    generate,
    left_pad,
    prefill,
    video_rows,
)

GRID = (3, 4, 6)  # temporal slices, patch rows, patch columns → 3 * 2 * 3 = 18 video tokens
QUESTIONS = ["What moves?", "How many shapes are visible at the start of the clip?", "Describe the video."]


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="module", params=["videorope", "m_rope"])
def backend(request, ckpt):
    return TorchBackend.load(ckpt, TorchOptions(device="cpu", variant=request.param))


@pytest.fixture(scope="module")
def tokenizer(ckpt):
    return prompt.load_tokenizer_json(ckpt)


@pytest.fixture(scope="module")
def video(ckpt):
    import json

    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    width = 3 * pre["temporal_patch_size"] * pre["patch_size"] ** 2
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((int(np.prod(GRID)), width), dtype=np.float32)
    return SimpleNamespace(pixel_values=pixels, grid_thw=GRID)


def _rows(tokenizer, questions, n_video=18):
    return [prompt.prompt_ids(tokenizer, q, n_video) for q in questions]


def reference_greedy(model, rows, video, steps):
    """Greedy tokens by re-running the full model on prompt + tokens so far, left padded, for every step."""
    ids, mask = (torch.as_tensor(a) for a in left_pad(rows, 0))
    pv = torch.as_tensor(video.pixel_values) if video is not None else None
    grid = torch.tensor([video.grid_thw] * len(rows)) if video is not None else None
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            bp = model.positions(ids, None, grid, mask)
            pv_all = None if pv is None else pv.repeat(len(rows), 1)
            embeds = model.embed(ids, pixel_values_videos=pv_all, video_grid_thw=grid)
            logits, _ = model.decoder(embeds, torch.as_tensor(bp.positions), mask)
            tok = logits[:, -1].argmax(-1)
            out.append(tok.tolist())
            ids = torch.cat([ids, tok[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return [list(t) for t in zip(*out)]


NO_STOP = dict(stop_at_eos=False)


def test_greedy_matches_the_no_cache_reference(backend, tokenizer, video):
    rows = _rows(tokenizer, QUESTIONS[:1])
    config = GenerationConfig(max_new_tokens=6, prefill_chunk=16, vision_chunk=1, **NO_STOP)
    got = generate(backend, rows, video, config)
    assert got.tokens == reference_greedy(backend.model, rows, video, 6)


def test_batch_over_one_video_equals_each_prompt_alone(backend, tokenizer, video):
    rows = _rows(tokenizer, QUESTIONS)
    assert len({len(r) for r in rows}) == 3  # different lengths: real left padding
    config = GenerationConfig(max_new_tokens=5, prefill_chunk=32, **NO_STOP)
    together = generate(backend, rows, video, config).tokens
    alone = [generate(backend, [r], video, config).tokens[0] for r in rows]
    assert together == alone
    assert together == reference_greedy(backend.model, rows, video, 5)


def test_chunked_prefill_equals_one_shot(backend, tokenizer, video):
    rows = _rows(tokenizer, QUESTIONS[1:])
    ids, mask = left_pad(rows, backend.info.pad_token_id)
    bp = build_positions(backend.info, rows, GRID)
    visual = encode_video(backend, video.pixel_values, GRID, chunk=3)
    pos, mask_t = torch.as_tensor(bp.positions), torch.as_tensor(mask)
    logits = {}
    for chunk in (5, 17, ids.shape[1]):
        backend.allocate(len(rows), ids.shape[1])
        logits[chunk] = prefill(backend, ids, visual, pos, mask_t, chunk)
        assert backend.length == ids.shape[1]
    for chunk in (5, 17):
        torch.testing.assert_close(logits[chunk], logits[ids.shape[1]], atol=2e-5, rtol=1e-5)
    a = generate(backend, rows, video, GenerationConfig(max_new_tokens=4, prefill_chunk=3, vision_chunk=1, **NO_STOP))
    b = generate(backend, rows, video,
                 GenerationConfig(max_new_tokens=4, prefill_chunk=4096, vision_chunk=64, **NO_STOP))
    assert a.tokens == b.tokens


def test_chunked_vision_equals_whole_video(backend, video):
    whole = backend.model.vision(torch.as_tensor(video.pixel_values), torch.tensor([GRID]))
    for chunk in (1, 2):
        torch.testing.assert_close(encode_video(backend, video.pixel_values, GRID, chunk), whole, atol=1e-5, rtol=1e-5)


def test_decode_positions_continue_per_sample_with_left_padding(backend, tokenizer, video):
    rows = _rows(tokenizer, QUESTIONS)
    seen, forward = [], backend.forward

    def spy(embeds, positions, mask, **kw):
        seen.append(positions.clone())
        return forward(embeds, positions, mask, **kw)

    backend.forward = spy
    try:
        steps = 4
        generate(backend, rows, video, GenerationConfig(max_new_tokens=steps, prefill_chunk=4096, **NO_STOP))
    finally:
        del backend.forward
    decode = torch.cat(seen[1:], dim=2).numpy()  # (A, B, steps - 1): positions fed with tokens 1..steps-1
    grid = np.array([GRID])
    for b, r in enumerate(rows):
        segs = rope.segments_from_tokens(np.asarray(r), None, grid, image_token_id=backend.info.image_token_id,
                                         video_token_id=backend.info.video_token_id)
        full = rope.position_ids(backend.info.variant, list(segs) + [("text", steps - 1)],
                                 **backend.info.position_params)
        np.testing.assert_array_equal(decode[:, b], full[:, len(r):])


def test_capacity_too_small_is_a_clear_error(backend, tokenizer, video):
    rows = _rows(tokenizer, QUESTIONS[:1])
    with pytest.raises(ValueError, match="exceeds the KV cache capacity"):
        generate(backend, rows, video, GenerationConfig(max_new_tokens=8, max_context=len(rows[0]) + 2))


@pytest.mark.parametrize("sync_every", [1, 16])
def test_stop_token_ends_a_sample(backend, tokenizer, video, sync_every):
    """Read back every step, the stop is seen mid-way with one more step already queued: the cache (sized to
    prompt + max_new_tokens) has room for it."""
    rows = _rows(tokenizer, QUESTIONS[:1])
    free = generate(backend, rows, video, GenerationConfig(max_new_tokens=6, **NO_STOP)).tokens[0]
    from videorope_trt.runtime.sampling import SamplingConfig

    stopped = generate(backend, rows, video, GenerationConfig(max_new_tokens=6, sync_every=sync_every,
                                                               sampling=SamplingConfig(stop_token_ids=(free[2],)),
                                                               **NO_STOP)).tokens[0]
    assert stopped == free[: free.index(free[2])]


def test_text_only_prompt(backend, tokenizer):
    rows = _rows(tokenizer, QUESTIONS[:2], n_video=0)
    got = generate(backend, rows, None, GenerationConfig(max_new_tokens=4, **NO_STOP))
    assert got.tokens == reference_greedy(backend.model, rows, None, 4)


def test_text_stream_writes_the_answer_without_splitting_characters(tokenizer):
    text = "The red circle moves: très vite ✓ 動く"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    pieces = []
    stream = streaming.TextStream(tokenizer, 1, pieces.append)
    for i, t in enumerate(ids):
        stream(i, torch.tensor([0, t]), [False, True])
    assert "".join(pieces) == text == stream.text()
    assert not any("\ufffd" in p for p in pieces)


def test_run_command_streams_the_greedy_answer(ckpt, tmp_path, capsys):
    from videorope_trt.cli import main
    from videorope_trt.media.synthetic import make_synthetic_video
    from videorope_trt.media.video import ProcessorConfig, load_video

    clip = tmp_path / "clip.mp4"
    make_synthetic_video(clip, seconds=2, fps=4, width=112, height=84)
    assert main(["run", str(ckpt), "--video", str(clip), "--prompt", "What moves?", "--max-new-tokens", "5",
                 "--no-progress", "--device", "cpu", "--prefill-chunk", "8"]) == 0
    streamed = capsys.readouterr().out.strip()
    # the same answer through the library, default (eos-stopping) settings
    be, tok = TorchBackend.load(ckpt, TorchOptions(device="cpu")), prompt.load_tokenizer_json(ckpt)
    video = load_video(clip, fps=2.0, processor=ProcessorConfig.from_checkpoint(ckpt))
    rows = [prompt.prompt_ids(tok, "What moves?", prompt.video_token_count(video.grid_thw))]
    ids = generate(be, rows, video, GenerationConfig(max_new_tokens=5)).tokens[0]
    assert streamed == tok.decode(ids, skip_special_tokens=True).strip()


def test_run_reads_prompts_from_a_file(ckpt, tmp_path, capsys):
    """--prompt-file: one prompt a line (blank lines skipped), after any --prompt; every answer printed."""
    from videorope_trt.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What moves?\n\nHow many shapes are there?\n")
    args = ["run", str(ckpt), "--device", "cpu", "--max-new-tokens", "2", "--no-progress", "--prompt-file"]
    assert main(args + [str(prompts), "--prompt", "Describe the video."]) == 0
    out, err = capsys.readouterr()
    assert "3 prompt(s)" in err
    assert "--- prompt 2: What moves?" in out and "--- prompt 3: How many shapes are there?" in out
    assert main(args + [str(tmp_path / "missing.txt")]) == 2
    assert "--prompt-file " in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(args + [str(tmp_path / "empty.txt")]) == 2
    assert "no prompt: give --prompt TEXT (repeatable) or --prompt-file FILE" in capsys.readouterr().err


def test_bench_command_writes_json_and_plot(ckpt, tmp_path, capsys):
    """The results on stdout, one line a context, then the files written, named."""
    import json

    from videorope_trt.cli import main

    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", str(ckpt), "--contexts", "120,200", "--decode-tokens", "3", "--frame-size", "56",
                 "--device", "cpu", "--json", str(out_json), "--plot", str(out_png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["[bench] 120 tokens", "[bench] 200 tokens"]
    assert lines[2] == f"[bench] wrote {out_json} (results) and {out_png} (where the time goes)"
    data = json.loads(out_json.read_text())
    assert [r["context"] for r in data["results"]] == [120, 200]
    for r in data["results"]:
        assert r["prompt_tokens"] <= r["context"] and r["prompt_tokens"] > r["context"] - 40
        assert r["decode_tokens"] == 2 and r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 and r["peak_host_gb"] > 0
        # the phases before the first token are disjoint and all inside it
        assert min(r["vision_s"], r["setup_s"], r["prefill_s"]) > 0
        assert r["vision_s"] + r["setup_s"] + r["prefill_s"] <= r["ttft_s"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reading_tokens_back_every_few_steps_changes_nothing(backend, tokenizer, video):
    rows = [prompt.prompt_ids(tokenizer, q, 18) for q in ("What is shown?", "Describe the motion in the video.")]
    results = []
    for every in (1, 3, 16):
        seen = []
        config = GenerationConfig(max_new_tokens=7, prefill_chunk=16, vision_chunk=2, stop_at_eos=False,
                                  sync_every=every)
        result = generate(backend, rows, video, config,
                          on_token=lambda s, t, a, seen=seen: seen.append((s, list(t), list(a))))
        assert [s for s, _, _ in seen] == list(range(7))  # every step streamed once, in order
        assert [[t for (_, row, act) in seen for t, a in [(row[b], act[b])] if a] for b in range(2)] == result.tokens
        results.append((result.tokens, seen))
    assert results[0] == results[1] == results[2]


LONG_QUESTION = "How many shapes are visible at the start of the clip, and which of them moves the fastest overall?"


def _mixed_batch(backend, tokenizer):
    """Two left-padded prompts over one video: the first has the 18 video tokens (and padding), the second none."""
    rows = [prompt.prompt_ids(tokenizer, "What moves?", 18), prompt.prompt_ids(tokenizer, LONG_QUESTION, 0)]
    ids, mask = left_pad(rows, backend.info.pad_token_id)
    assert mask[0, 0] == 0 and mask[1].all()  # the video prompt is the padded one
    return rows, ids, mask


def whole_prompt_embeds(backend, ids, visual):
    """The whole prompt's embeddings, built row by row: the k-th video token of a row takes visual row k."""
    embeds = backend.embed(torch.as_tensor(ids)).clone()
    for b in range(ids.shape[0]):
        slots = torch.as_tensor(ids[b] == backend.info.video_token_id)
        if slots.any():
            embeds[b, slots] = visual.to(embeds.dtype)
    return embeds


def test_prefill_feeds_each_chunk_exactly_the_rows_of_the_whole_prompt(backend, tokenizer, video):
    rows, ids, mask = _mixed_batch(backend, tokenizer)
    length = ids.shape[1]
    cols = np.flatnonzero(ids[0] == backend.info.video_token_id)
    assert len(cols) == 18 and any(cols[0] < s < cols[-1] for s in range(7, length, 7))  # chunk 7 cuts the video
    visual = encode_video(backend, video.pixel_values, GRID, chunk=3)
    whole = whole_prompt_embeds(backend, ids, visual)
    assert not torch.equal(whole[0, cols], backend.embed(torch.as_tensor(ids[:1]))[0, cols])  # the video is in
    torch.testing.assert_close(whole[0, cols], visual, atol=0, rtol=0)
    bp = build_positions(backend.info, rows, GRID)
    pos, mask_t, ids_t = torch.as_tensor(bp.positions), torch.as_tensor(mask), torch.as_tensor(ids)
    index = video_rows(backend, ids_t, visual)
    forward, seen = backend.forward, []

    def spy(embeds, positions, mask, **kw):
        seen.append(embeds.clone())
        return forward(embeds, positions, mask, **kw)

    for chunk in (1, 7, length):
        pieces = [chunk_embeds(backend, ids_t, s, min(length, s + chunk), visual, index)
                  for s in range(0, length, chunk)]
        assert torch.equal(torch.cat(pieces, 1), whole)
        seen.clear()
        backend.allocate(2, length)
        backend.forward = spy
        try:
            got = prefill(backend, ids, visual, pos, mask_t, chunk)
        finally:
            del backend.forward
        assert [e.shape[1] for e in seen] == [min(chunk, length - s) for s in range(0, length, chunk)]
        assert torch.equal(torch.cat(seen, 1), whole)
        backend.allocate(2, length)  # the whole-prompt path: slices of `whole`
        for s in range(0, length, chunk):
            want = backend.forward(whole[:, s : s + chunk], pos[:, :, s : s + chunk], mask_t[:, : s + chunk])
        assert torch.equal(got, want)


def test_greedy_tokens_unchanged_when_prefill_chunks_split_the_video(backend, tokenizer, video):
    rows, ids, _ = _mixed_batch(backend, tokenizer)
    alone = [reference_greedy(backend.model, rows[:1], video, 4)[0],
             reference_greedy(backend.model, rows[1:], None, 4)[0]]
    for chunk in (1, 7, ids.shape[1]):
        got = generate(backend, rows, video, GenerationConfig(max_new_tokens=4, prefill_chunk=chunk, **NO_STOP))
        assert got.tokens == alone, chunk


def test_wrong_number_of_video_tokens_is_a_clear_error(backend, tokenizer, video):
    rows = [prompt.prompt_ids(tokenizer, "What moves?", n) for n in (18, 17)]
    ids, mask = left_pad(rows, backend.info.pad_token_id)
    visual = encode_video(backend, video.pixel_values, GRID)
    calls, forward = [], backend.forward
    backend.forward = lambda *a, **kw: calls.append(a) or forward(*a, **kw)
    try:
        backend.allocate(2, ids.shape[1])
        pos = torch.zeros((3, 2, ids.shape[1]))
        with pytest.raises(ValueError, match="prompt 1 has 17 video tokens; the video encodes to 18"):
            prefill(backend, ids, visual, pos, torch.as_tensor(mask), 4)
    finally:
        del backend.forward
    assert calls == []  # checked once up front, before any chunk runs
    with pytest.raises(ValueError, match="needs 18 tokens, the run has 17"):  # generate's positions see it first
        generate(backend, rows, video, GenerationConfig(max_new_tokens=2))


def test_command_line_options_reach_the_backend_and_others_are_refused(ckpt, tmp_path, capsys):
    """Only the options given reach the backend (a single `run` does not compile unless asked); a torch-only
    option on another backend is an error naming it."""
    import argparse

    from videorope_trt.cli import main
    from videorope_trt.commands import run as commands

    base = dict(out=str(ckpt), checkpoint=None, backend="torch", device="cpu", dtype=None, target=None,
                compile=None, split_prefill=False, decoder=None)
    assert commands.backend_options(argparse.Namespace(**base), "run") == {"device": "cpu", "compile": False}
    assert commands.backend_options(argparse.Namespace(**base), "bench") == {"device": "cpu"}
    got = commands.backend_options(argparse.Namespace(**{**base, "compile": True, "dtype": "bfloat16"}), "run")
    assert got == {"device": "cpu", "compile": True, "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="--dtype, --compile applies to the torch backend"):
        commands.backend_options(argparse.Namespace(**{**base, "backend": "onnxruntime", "compile": True,
                                                       "dtype": "float16"}), "run")
    assert main(["run", str(tmp_path), "--backend", "onnxruntime", "--compile", "--checkpoint", str(ckpt),
                 "--prompt", "hi", "--no-progress"]) == 2
    assert "--compile, --checkpoint applies to the torch backend; --backend onnxruntime runs" in capsys.readouterr().err


def test_text_stream_finish_writes_a_held_back_incomplete_character(tokenizer):
    """An answer that ends inside a multi-byte character: held back while streaming, written by `finish`, so that
    everything written adds up to the decoded answer (what `run` prints)."""
    ids = tokenizer.encode("ok 動く", add_special_tokens=False).ids
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    pieces = []
    stream = streaming.TextStream(tokenizer, 0, pieces.append)
    for i, t in enumerate(ids[:cut]):
        stream(i, [t], [True])
    assert not "".join(pieces).endswith("\ufffd")  # held back
    stream.finish()
    assert "".join(pieces) == stream.text() == tokenizer.decode(ids[:cut]) and pieces[-1].endswith("\ufffd")
    stream.finish()  # nothing more to write
    assert "".join(pieces) == stream.text()
