"""Chat messages → the Qwen2-VL prompt's token ids, and the answer's text as it streams, stop strings honoured.

The prompt is tokenized in the same pieces as `media.prompt.prompt_ids`: one piece up to each user turn's header,
the video's placeholder tokens, then the text up to the next user header (or the assistant header at the end). A
one-turn request (an optional system message, one user message with the video before the text) so gets exactly
the ids `videorope-trt run` builds, and so the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from videorope_trt.media.prompt import DEFAULT_SYSTEM


@dataclass(frozen=True)
class Conversation:
    """The request's messages as (role, pieces), each piece a str or VIDEO; at most one video in all."""

    turns: tuple
    video_url: str | None

    @property
    def has_video(self) -> bool:
        return self.video_url is not None


VIDEO = object()  # the placeholder piece where the video's tokens go


def conversation(messages) -> Conversation:
    """Check the turn structure (system messages first, then user/assistant turns ending with a user turn) and
    collect the one video. ValueError names the message at fault."""
    turns, url, seen_chat = [], None, False
    for i, m in enumerate(messages):
        if m.role == "system" and seen_chat:
            raise ValueError(f"messages.{i}: a system message must come before the user and assistant messages")
        seen_chat |= m.role != "system"
        pieces = [m.content] if isinstance(m.content, str) else []
        for j, part in enumerate([] if isinstance(m.content, str) else m.content):
            if part.type == "text":
                pieces.append(part.text)
                continue
            if m.role != "user":
                raise ValueError(f"messages.{i}.content.{j}: a video belongs in a user message, not a {m.role} one")
            if url is not None:
                raise ValueError(f"messages.{i}.content.{j}: one video per request; this is the second")
            url = part.video_url.url
            pieces.append(VIDEO)
        turns.append((m.role, tuple(pieces)))
    if not turns or turns[-1][0] != "user":
        raise ValueError("messages: the last message must be the user's")
    return Conversation(tuple(turns), url)


def prompt_row(tokenizer, conv: Conversation, video_tokens: int) -> list:
    """The token ids of the whole chat with the assistant's header open, the video as `video_tokens` pads."""
    from videorope_trt.media.prompt import _special

    systems = [t for t in conv.turns if t[0] == "system"]
    head = "" if systems else f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    ids, text = [], head

    def flush():
        nonlocal text
        if text:
            ids.extend(tokenizer.encode(text, add_special_tokens=False).ids)
        text = ""

    for role, pieces in conv.turns:
        text += f"<|im_start|>{role}\n"
        if role == "user":
            flush()
        for piece in pieces:
            if piece is VIDEO:
                flush()
                if video_tokens:
                    start, pad, end = (_special(tokenizer, t) for t in ("<|vision_start|>", "<|video_pad|>",
                                                                          "<|vision_end|>"))
                    ids.extend([start] + [pad] * video_tokens + [end])
            else:
                text += piece
        text += "<|im_end|>\n"
    text += "<|im_start|>assistant\n"
    flush()
    return ids


class StopText(Exception):
    """A stop string was produced: generation ends here (the answer is the text before it)."""


class AnswerText:
    """Receives the text a `runtime.streaming.TextStream` writes and passes on what is certain: text that cannot
    turn out to be the start of a stop string. On a stop string it keeps the text before it and raises StopText,
    which ends the generation at this step."""

    def __init__(self, stops=(), emit=None):
        self.stops = tuple(stops)
        self.emit = emit or (lambda text: None)
        self.text = ""  # everything written so far
        self.sent = 0  # how much of it has been emitted
        self.stopped = False

    def write(self, new: str) -> None:
        self.text += new
        hits = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
            self._emit(len(self.text))
            raise StopText()
        self._emit(len(self.text) - self._held())

    def finish(self, final: str) -> None:
        """The answer's whole text at the end (the stream may hold back a last incomplete character)."""
        if not self.stopped:
            self.text = final
            for s in self.stops:  # a stop string the held-back tail completed
                if (i := self.text.find(s)) >= 0:
                    self.text, self.stopped = self.text[:i], True
        self._emit(len(self.text))

    def _held(self) -> int:
        """The longest end of the text that is the start of a stop string."""
        return max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            self.emit(self.text[self.sent : upto])
            self.sent = upto
