"""The checkpoint's tokenizer on both ends: chat prompts in (video tokens expanded), streamed text out."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_SYSTEM = "You are a helpful assistant."


def load_tokenizer_json(ckpt_dir):
    """`tokenizers.Tokenizer` from the checkpoint's tokenizer.json (the fast tokenizer alone, for prompts and
    streamed text; `models.load_tokenizer` gives transformers' full tokenizer)."""
    from tokenizers import Tokenizer

    path = Path(ckpt_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {ckpt_dir}: expected a checkpoint (or artifact) directory holding one")
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


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # the answer appears as it is generated, not when the buffer fills


class TextStream:
    """Writes one sample's answer as it is generated.

    Decodes the whole answer so far and writes what is new, holding back text that ends in an incomplete UTF-8
    sequence (shown as U+FFFD) until the next token completes it, so multi-byte characters never split.
    """

    def __init__(self, tokenizer, sample: int = 0, write=None):
        self.tokenizer = tokenizer
        self.sample = sample
        self.write = write or _write_stdout
        self.ids: list = []
        self.sent = 0

    def __call__(self, step, tokens, active):
        if not active[self.sample]:
            return
        self.ids.append(int(tokens[self.sample]))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self.write(text[self.sent :])
        self.sent = len(text)

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)
