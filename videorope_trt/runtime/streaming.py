"""Streamed text out: the answer written as it is generated (prompts in: `media.prompt`)."""

from __future__ import annotations

import sys


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

    def finish(self) -> None:
        """Write what is still held back at the end of the answer (an incomplete character that stayed one), so
        that everything written adds up to `text()`."""
        text = self.text()
        if len(text) > self.sent:
            self.write(text[self.sent :])
            self.sent = len(text)

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)
