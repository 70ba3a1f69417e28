"""Request validation and response bodies for the OpenAI-compatible API of `bonesoup serve`.

Requests follow the OpenAI chat-completions and completions formats, plus three fields:
`preference` (n weights on the simplex, one per objective), `method` (bone-soup, rewarded-soup
or aba) and the optional `extrapolation` (n factors k_i >= 1, one per objective). Every invalid
request becomes an `ApiError`, which the server sends as status 400 (or the status it carries)
with the body {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bonesoup.errors import BonesoupError
from bonesoup.preferences import check_preference

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 200
MAX_MESSAGES = 256
MAX_SEED = 2**63 - 1
CHAT_ROLES = ("system", "developer", "user", "assistant")

# Fields a request may contain. The OpenAI fields that this server cannot honour are accepted only
# with their neutral value (see _check_neutral_fields), so a client never gets a silent change.
_COMMON_FIELDS = {
    "model",
    "preference",
    "method",
    "extrapolation",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "store"}
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of"}


class ApiError(Exception):
    """An error sent to the client as OpenAI-style JSON with an HTTP status."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        error_type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.error_type = error_type
        self.code = code

    def body(self) -> dict[str, Any]:
        """Return the JSON body {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Limits:
    """Bounds the server enforces on every request."""

    max_tokens: int = 512  # maximum max_tokens a request may set
    default_max_tokens: int = 128  # max_tokens when a request omits it
    max_prompt_tokens: int = 2048  # maximum prompt length in tokens, after the chat template
    context_length: int | None = None  # prompt + max_tokens may not exceed this (model positions)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one request; temperature 0 means greedy decoding."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class ParsedRequest:
    """A validated request, before tokenization."""

    kind: str  # "chat" or "completion"
    preference: tuple[float, ...]
    method: str
    sampling: SamplingParams
    extrapolation: tuple[float, ...] | None = None  # factors k_i >= 1, shape (n,)
    stream: bool = False
    include_usage: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)  # chat only
    prompt: str = ""  # completion only


def _invalid(message: str, param: str | None, code: str | None = None) -> ApiError:
    return ApiError(message, param=param, code=code)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(body: dict[str, Any], allowed: set[str], endpoint: str) -> None:
    for key in body:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _invalid(
                f"unknown field {key!r} in a {endpoint} request{hint}",
                param=str(key),
                code="unknown_parameter",
            )


def _check_neutral_fields(body: dict[str, Any]) -> None:
    """Reject OpenAI options this server does not implement unless they have the neutral value."""
    for name in ("frequency_penalty", "presence_penalty"):
        value = body.get(name)
        if value is not None and not (_is_number(value) and value == 0):
            raise _invalid(f"{name} = {value!r} is not supported; omit it or pass 0", param=name)
    for name in ("logit_bias",):
        if body.get(name):
            raise _invalid(f"{name} is not supported; omit it", param=name)
    for name in ("logprobs", "top_logprobs", "echo", "suffix"):
        value = body.get(name)
        if value not in (None, False, 0, ""):
            raise _invalid(f"{name} = {value!r} is not supported; omit it", param=name)
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise _invalid(f"best_of = {best_of!r} is not supported; omit it or pass 1", "best_of")


def check_model(value: Any, served_id: str) -> None:
    """Accept `model` only when it is omitted or equals the served id; it never names a path."""
    if value is None:
        return
    if not isinstance(value, str) or value != served_id:
        raise ApiError(
            f"model {value!r} is not served here; use {served_id!r} or omit the field",
            param="model",
            status=404,
            code="model_not_found",
        )


def parse_preference(value: Any, n: int) -> tuple[float, ...]:
    """Validate `preference`: n finite non-negative numbers summing to 1 within 1e-6."""
    if value is None:
        raise _invalid(
            f"preference is missing: give {n} non-negative weights summing to 1, one per "
            f"objective, such as {[round(1 / n, 4)] * n}",
            param="preference",
        )
    if not isinstance(value, list) or not all(_is_number(item) for item in value):
        raise _invalid(
            f"preference must be a list of {n} numbers, got {value!r}", param="preference"
        )
    if len(value) != n:
        raise _invalid(
            f"preference has {len(value)} weights but this server has {n} objectives; give "
            f"exactly {n} weights summing to 1",
            param="preference",
        )
    try:
        checked = check_preference(value, n)
    except BonesoupError as error:
        raise _invalid(str(error), param="preference") from None
    return tuple(float(item) for item in checked)


def parse_method(value: Any, methods: tuple[str, ...]) -> str:
    """Validate `method` against the methods whose backbones this server loaded."""
    if value is None:
        value = "bone-soup"
    if not isinstance(value, str) or value not in methods:
        close = difflib.get_close_matches(str(value), methods, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise _invalid(
            f"method {value!r} is not served; {hint}valid methods: {', '.join(methods)}",
            param="method",
        )
    return value


def parse_extrapolation(value: Any, n: int) -> tuple[float, ...] | None:
    """Validate `extrapolation`: omitted, or n finite numbers k_i >= 1, one per objective."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(_is_number(k) and math.isfinite(k) and k >= 1 for k in value)
    ):
        raise _invalid(
            f"extrapolation must be a list of {n} finite numbers >= 1, one per objective "
            f"(1 means no extrapolation), got {value!r}",
            param="extrapolation",
        )
    return tuple(float(k) for k in value)


def _parse_int(body: dict[str, Any], name: str, low: int, high: int, default: int | None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise _invalid(f"{name} must be an integer, got {value!r}", param=name)
        value = int(value)
    if not low <= value <= high:
        raise _invalid(f"{name} = {value} is out of range: it must be in [{low}, {high}]", name)
    return value


def _parse_float(
    body: dict[str, Any], name: str, low: float, high: float, low_open: bool, default: float
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise _invalid(f"{name} must be a finite number, got {value!r}", param=name)
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise _invalid(
            f"{name} = {value} is out of range: it must be in {bracket}{low:g}, {high:g}]", name
        )
    return float(value)


def _parse_stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise _invalid(f"stop must be a string or a list of strings, got {value!r}", "stop")
    if len(items) > MAX_STOP_SEQUENCES:
        raise _invalid(
            f"stop has {len(items)} sequences; at most {MAX_STOP_SEQUENCES} are allowed", "stop"
        )
    for item in items:
        if not item or len(item) > MAX_STOP_LENGTH:
            raise _invalid(
                f"stop sequence {item!r} must have 1 to {MAX_STOP_LENGTH} characters", "stop"
            )
    return tuple(items)


def parse_sampling(body: dict[str, Any], limits: Limits, token_field: str = "max_tokens"):
    """Validate max_tokens (or max_completion_tokens), temperature, top_p, seed, stop and n."""
    n = body.get("n")
    if n is not None and (not _is_number(n) or n != 1):
        raise _invalid(f"n = {n!r} is not supported: this server returns one choice; pass 1", "n")
    max_tokens = _parse_int(body, token_field, 1, limits.max_tokens, limits.default_max_tokens)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_parse_float(body, "temperature", 0.0, 2.0, False, 1.0),
        top_p=_parse_float(body, "top_p", 0.0, 1.0, True, 1.0),
        seed=_parse_int(body, "seed", 0, MAX_SEED, None),
        stop=_parse_stop(body.get("stop")),
    )


def _parse_stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid(f"stream must be true or false, got {stream!r}", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise _invalid("stream_options is only allowed with stream: true", "stream_options")
    include = options.get("include_usage", False) if isinstance(options, dict) else None
    if not isinstance(include, bool) or set(options) - {"include_usage"}:
        raise _invalid(
            f'stream_options must be {{"include_usage": true|false}}, got {options!r}',
            "stream_options",
        )
    return stream, include


def _message_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    param = f"messages[{index}].content"
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid(f"{param} may only contain text parts; got {part!r}", param)
            if not isinstance(part.get("text"), str):
                raise _invalid(f"{param}: a text part needs a string 'text' field", param)
            parts.append(part["text"])
        return "".join(parts)
    raise _invalid(f"{param} must be a string or a list of text parts, got {content!r}", param)


def parse_messages(value: Any) -> list[dict[str, str]]:
    """Validate chat messages: a non-empty list of {"role", "content"} with text content."""
    if not isinstance(value, list) or not value:
        raise _invalid("messages must be a non-empty list of messages", param="messages")
    if len(value) > MAX_MESSAGES:
        raise _invalid(
            f"messages has {len(value)} entries; at most {MAX_MESSAGES} are allowed", "messages"
        )
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{index}] must be an object", param=f"messages[{index}]")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise _invalid(
                f"messages[{index}].role {role!r} is invalid; use one of {', '.join(CHAT_ROLES)}",
                param=f"messages[{index}].role",
            )
        # Chat templates of small open models know "system" but not OpenAI's newer "developer".
        role = "system" if role == "developer" else role
        messages.append({"role": role, "content": _message_text(message.get("content"), index)})
    return messages


def parse_prompt(value: Any) -> str:
    """Validate a completions `prompt`: one string, or a list holding exactly one string."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str):
        raise _invalid(
            "prompt must be one string (a list of several prompts or of token ids is not "
            f"supported), got {type(value).__name__}",
            param="prompt",
        )
    return value


def parse_request(
    body: Any, kind: str, served_id: str, n: int, methods: tuple[str, ...], limits: Limits
) -> ParsedRequest:
    """Validate a chat ("chat") or completions ("completion") request body."""
    endpoint = "chat completions" if kind == "chat" else "completions"
    if not isinstance(body, dict):
        raise _invalid(f"the request body must be a JSON object, got {type(body).__name__}", None)
    _check_fields(body, CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS, endpoint)
    check_model(body.get("model"), served_id)
    _check_neutral_fields(body)
    token_field = "max_tokens"
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        if body.get("max_tokens") is not None:
            raise _invalid("give max_tokens or max_completion_tokens, not both", "max_tokens")
        token_field = "max_completion_tokens"
    stream, include_usage = _parse_stream(body)
    request = ParsedRequest(
        kind=kind,
        preference=parse_preference(body.get("preference"), n),
        method=parse_method(body.get("method"), methods),
        extrapolation=parse_extrapolation(body.get("extrapolation"), n),
        sampling=parse_sampling(body, limits, token_field),
        stream=stream,
        include_usage=include_usage,
    )
    if kind == "chat":
        request.messages = parse_messages(body.get("messages"))
    else:
        request.prompt = parse_prompt(body.get("prompt"))
    return request


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    kind: str,
    response_id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    soup: dict[str, Any],
) -> dict[str, Any]:
    """Build a non-streaming response; `soup` reports the method, preference and coefficients."""
    if kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": response_id,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
        "soup": soup,
    }


def chunk_body(
    kind: str,
    response_id: str,
    model: str,
    created: int,
    delta: dict[str, str] | None = None,
    text: str = "",
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """Build one streamed chunk: choices[0].delta for chat, choices[0].text for completions."""
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
        obj = "text_completion"
    choice["finish_reason"] = finish_reason
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
    }


def usage_chunk(
    kind: str,
    response_id: str,
    model: str,
    created: int,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """Build the last streamed chunk when stream_options.include_usage is true."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }
