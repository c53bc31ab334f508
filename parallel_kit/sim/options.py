"""Request fields and ``options`` checked the way Ollama's Go code checks them.

Ollama decodes a request body into Go structs (``api.GenerateRequest``, ``api.ChatRequest``,
``openai.ChatCompletionRequest``): a field of the wrong JSON type is a 400 with Go's
``encoding/json`` message, an unknown field is ignored. ``options`` is a free map that
``api.Options.FromMap`` applies when the model is scheduled: a value of the wrong type is an
error there (HTTP 500, ``option "num_predict" must be of type integer``), a number for a whole
number option is truncated (JSON numbers are float64 in Go), ``null`` and unknown keys are
ignored. Sources: https://github.com/ollama/ollama/blob/main/api/types.go and
https://github.com/ollama/ollama/blob/main/server/routes.go.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["OPTION_TYPES", "BodyError", "OptionError", "check_fields", "go_quote",
           "json_kind", "runner_options"]

#: ``api.Options`` and ``api.Runner`` fields by JSON name → Go kind (the current Options
#: struct; older fields such as ``mirostat`` are unknown keys now and are ignored).
OPTION_TYPES: dict[str, str] = {
    # runner options: fixed when the model is loaded (a change reloads it)
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int",
    "use_mmap": "bool", "num_thread": "int",
    # per request
    "num_keep": "int", "seed": "int", "num_predict": "int", "top_k": "int",
    "top_p": "float32", "min_p": "float32", "typical_p": "float32", "repeat_last_n": "int",
    "temperature": "float32", "repeat_penalty": "float32", "presence_penalty": "float32",
    "frequency_penalty": "float32", "stop": "array",
}


class BodyError(Exception):
    """400: the body does not decode into Ollama's request struct (Go's message)."""


class OptionError(Exception):
    """500: an ``options`` value ``FromMap`` refuses (Ollama's message)."""


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (double quotes, backslash escapes)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\t", "\\t").replace("\r", "\\r")
    return f'"{out}"'


def json_kind(value: Any) -> str:
    """The JSON kind Go's decoder names in its errors (``number``, ``string``, ``bool``,
    ``array``, ``object``, ``null``), for a value decoded by Python's ``json``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


_GO_TYPE = {"string": "string", "bool": "bool", "int": "int", "strings": "[]string",
            "ints": "[]int", "number": "float64", "object": "map[string]interface {}", "messages": "[]api.Message"}


def _fits(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind in ("strings", "ints", "messages"):
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True  # "any"


def check_fields(body: dict[str, Any], struct: str, fields: dict[str, str]) -> None:
    """Refuse a field whose JSON type does not decode into the Go struct's field.

    Raises:
        BodyError: ``json: cannot unmarshal number into Go struct field
            GenerateRequest.prompt of type string`` (Go's ``UnmarshalTypeError`` text).
    """
    for key, kind in fields.items():
        value = body.get(key)
        if not _fits(kind, value):
            raise BodyError(f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                            f"{struct}.{key} of type {_GO_TYPE.get(kind, kind)}")
        if kind in ("strings", "ints") and isinstance(value, list):
            inner = "string" if kind == "strings" else "int"
            for item in value:
                if not _fits(inner, item):
                    raise BodyError(f"json: cannot unmarshal {json_kind(item)} into Go struct "
                                    f"field {struct}.{key} of type {inner}")


def runner_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as ``api.Options.FromMap`` applies them: checked, whole numbers truncated,
    ``null`` and unknown keys dropped. Returns the known options with Go's values.

    Raises:
        OptionError: a value of the wrong type (Ollama answers 500 with this message).
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        kind = OPTION_TYPES.get(key)
        if kind is None or value is None:
            continue
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise OptionError(f"option {go_quote(key)} must be of type integer")
            out[key] = int(value)  # Go: int64(float64) truncates toward zero
        elif kind == "float32":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(f"option {go_quote(key)} must be of type float32")
            out[key] = float(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise OptionError(f"option {go_quote(key)} must be of type boolean")
            out[key] = value
        else:  # array of strings
            if not isinstance(value, list):
                raise OptionError(f"option {go_quote(key)} must be of type array")
            if not all(isinstance(v, str) for v in value):
                raise OptionError(f"option {go_quote(key)} must be of an array of strings")
            out[key] = list(value)
    return out
