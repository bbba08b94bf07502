"""The prompt layout: the checkpoint's tokenizer (tokenizer.json alone) and a one-turn Qwen2-VL chat prompt with
the video's placeholder tokens expanded."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SYSTEM = "You are a helpful assistant."


def load_tokenizer_json(ckpt_dir):
    """`tokenizers.Tokenizer` from the checkpoint's tokenizer.json (the fast tokenizer alone, for prompts and
    streamed text; `models.load_tokenizer` gives transformers' full tokenizer)."""
    from tokenizers import Tokenizer

    path = Path(ckpt_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {ckpt_dir}: expected a checkpoint (or artifact) directory "
                                "holding one")
    return Tokenizer.from_file(str(path))


def _special(tokenizer, token: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise ValueError(f"the tokenizer has no special token {token!r}; expected a Qwen2-VL tokenizer")
    return tid


def prompt_ids(tokenizer, text: str, video_tokens: int = 0, system: str | None = DEFAULT_SYSTEM) -> list:
    """Token ids of a one-turn Qwen2-VL chat prompt, the video (if any) before the question:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|video_pad|> x video_tokens <|vision_end|>{text}<|im_end|>\\n<|im_start|>assistant\\n
    """
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    ids = tokenizer.encode(head + "<|im_start|>user\n", add_special_tokens=False).ids
    if video_tokens:
        start, pad, end = (_special(tokenizer, t) for t in ("<|vision_start|>", "<|video_pad|>", "<|vision_end|>"))
        ids += [start] + [pad] * video_tokens + [end]
    return ids + tokenizer.encode(f"{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).ids


def video_token_count(grid_thw, spatial_merge_size: int = 2) -> int:
    """LLM tokens of a video whose grid (t, h, w) is in patches."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // spatial_merge_size**2
