"""Structured outputs in the simulator: ``format: "json"`` or a JSON schema gives JSON text.

Ollama turns ``format`` into a grammar for the sampler (``llm/server.go``: ``"json"`` → a JSON
grammar, an object → the schema's grammar), so the model can only write JSON and stops when
the value is complete. The simulator writes a value of the schema's shape from its word list:
``"json"`` and an object without properties give ``{"response": "<words>"}``; a schema gives an
object with every property, by its ``type`` (string, integer, number, boolean, array, object,
null); ``enum`` picks one of its values, ``const`` is itself, ``$ref`` follows ``$defs``, and
``anyOf``/``oneOf``/``allOf`` take their first choice. The text is cut into
pieces of about 4 bytes (the simulator's tokens). A ``num_predict`` below the pieces cuts the
answer short — invalid JSON, as Ollama's is then — with ``done_reason`` ``length``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_answer", "json_pieces"]

_WORDS = ("parallel", "slot", "cache", "prompt", "token", "server", "queue", "batch", "model",
          "answer", "time", "memory")


def _word(seed: int, i: int) -> str:
    return _WORDS[(seed + 7 * i + (i * i) % 5) % len(_WORDS)]


def _value(schema: Any, seed: int, depth: int, defs: dict[str, Any]) -> Any:
    if not isinstance(schema, dict) or depth > 6:
        return _word(seed, depth)
    if "$ref" in schema and isinstance(schema["$ref"], str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _value(defs.get(name, {}), seed, depth + 1, defs)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[seed % len(enum)]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            return _value(choices[0], seed, depth + 1, defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    props = schema.get("properties")
    if kind == "object" or (kind is None and isinstance(props, dict)):
        if not isinstance(props, dict) or not props:
            # An open object (no properties): what the model writes for "json".
            return {"response": " ".join(_word(seed, j) for j in range(6))}
        return {k: _value(v, seed + 31 * i, depth + 1, defs)
                for i, (k, v) in enumerate(props.items())}
    if kind == "array":
        n = schema.get("minItems", 2)
        n = n if isinstance(n, int) and 0 <= n <= 8 else 2
        return [_value(schema.get("items", {"type": "string"}), seed + i, depth + 1, defs)
                for i in range(max(n, 1) if schema.get("maxItems") != 0 else 0)]
    if kind == "integer":
        return seed % 100
    if kind == "number":
        return (seed % 1000) / 10
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    return " ".join(_word(seed, depth + j) for j in range(3))


def json_answer(fmt: Any, seed: int) -> str:
    """The JSON text answering a request with ``format`` ``fmt`` (``"json"`` or a schema
    object); the same for the same ``seed``."""
    if isinstance(fmt, dict):
        defs = fmt.get("$defs") or fmt.get("definitions") or {}
        value = _value(fmt, seed, 0, defs if isinstance(defs, dict) else {})
    else:
        value = {"response": " ".join(_word(seed, j) for j in range(6))}
    return json.dumps(value, ensure_ascii=False)


def json_pieces(text: str, size: int = 4) -> list[str]:
    """``text`` in pieces of ``size`` characters (the simulator's tokens)."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
