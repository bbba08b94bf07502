"""The OpenAI chat-completions wire format, as vLLM's and SGLang's servers accept it for video models.

    {"model": ..., "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..." | "file:///..." | "/path" | "https://..."}},
        {"type": "text", "text": "What happens?"}]}],
     "stream": false, "max_tokens": 64, "temperature": 0, "top_p": 1, "stop": ["\\n\\n"], "seed": 0}

Every model forbids unknown fields: a misspelt option is a 400 naming it, never silently ignored. Fields beyond
OpenAI's are vLLM's names where vLLM has one (`stop_token_ids`); `fps` and `max_frames` set the video sampling of one
request. Responses are plain dicts in OpenAI's shapes (`chat.completion`, `chat.completion.chunk`, `error`).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class VideoURL(_Strict):
    url: str = Field(min_length=1)


class VideoPart(_Strict):
    type: Literal["video_url"]
    video_url: VideoURL


Part = Annotated[Union[TextPart, VideoPart], Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[Part]]
    name: str | None = None  # accepted as OpenAI does; the chat template has no place for it


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    #: 0 (greedy) unless given: `videorope-trt run`'s default, so that a request answers as `run` does
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1, le=1, description="one answer per request")
    user: str | None = None
    stop_token_ids: list[int] | None = None
    fps: float | None = Field(None, gt=0, le=1000)
    max_frames: int | None = Field(None, ge=1)

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_strings(self) -> tuple:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: expected up to 4 non-empty strings")
        return tuple(stops)


def _is_branch(part) -> bool:
    """A union member's label in an error's location (`str`, `list[...]`, `tagged-union[...]`): not a field."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none"))


def _field_path(loc) -> str:
    """The error's location as the client wrote it: union labels and a tagged union's tag left out."""
    out, tag_follows = [], False
    for i, part in enumerate(loc):
        if tag_follows and i and isinstance(loc[i - 1], int):
            tag_follows = False  # the discriminator's value, after the list index
            continue
        if _is_branch(part):
            tag_follows = tag_follows or str(part).startswith(("tagged-union", "list[tagged-union"))
            continue
        out.append(str(part))
    return ".".join(out) or "body"


def validation_message(error: ValidationError) -> str:
    """One line per problem, naming the field by its path (`messages.0.content.1.video_url.url`). Where a value
    may take several forms (a message's content: a string or a list of parts), the form the value took speaks."""
    errors = error.errors(include_url=False)
    deep = [e["loc"] for e in errors]
    lines = []
    for e in errors:
        loc = e["loc"]
        if loc and _is_branch(loc[-1]) and any(o[: len(loc) - 1] == loc[:-1] and len(o) > len(loc) for o in deep):
            continue  # "not a string" where the value is a list whose items have the real problem
        where = _field_path(loc)
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown field {where!r}")
        elif e["type"] == "json_invalid":
            lines.append(f"the body is not valid JSON ({e['ctx'].get('error', e['msg'])})")
        else:
            lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_request(body: bytes) -> ChatRequest:
    """The request in `body`, or ValueError with `validation_message`'s text."""
    if not body.strip():
        raise ValueError("the body is empty; expected a JSON chat-completion request")
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as e:
        raise ValueError(validation_message(e)) from None


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = {400: "invalid_request_error", 404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
            429: "rate_limit_error", 503: "service_unavailable"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(request_id: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
               completion_tokens: int) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(request_id: str, model: str, created: int, delta: dict | None = None, finish_reason: str | None = None,
          usage_record: dict | None = None) -> dict:
    """One `chat.completion.chunk`; with `usage_record` it is the usage-only chunk (no choices) that
    `stream_options.include_usage` asks for."""
    choices = [] if usage_record else [{"index": 0, "delta": delta or {}, "logprobs": None,
                                        "finish_reason": finish_reason}]
    out = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": choices}
    if usage_record:
        out["usage"] = usage_record
    return out


def models_list(model: str, max_model_len: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": int(time.time()),
                                        "owned_by": "videorope-trt", "max_model_len": max_model_len}]}
