"""Prompt sets: the workshop's own, and the user's files.

``.jsonl``: one JSON object a line with ``prompt`` and optional ``model``, ``num_predict``,
``options``, ``system``, ``id``. ``.txt``: one prompt a line (blank lines skipped).
Every problem is a :class:`~parallel_kit.errors.ConfigError` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .records import RequestSpec

__all__ = ["builtin_prompt_sets", "load_prompts", "make_specs", "original_prompts"]

_ALLOWED_KEYS = {"prompt", "model", "num_predict", "options", "system", "id"}


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with the kit (``original``, ``workshop``)."""
    folder = resources.files("parallel_kit") / "data" / "prompts"
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir()
                  if p.name.endswith(".jsonl"))


def original_prompts() -> list[RequestSpec]:
    """The original demo's five prompts ("What is Python?" and the like)."""
    return load_prompts("original")


def load_prompts(source: str | os.PathLike[str]) -> list[RequestSpec]:
    """Load prompts from a ``.jsonl`` or ``.txt`` file, or a built-in set by name.

    Raises:
        ConfigError: missing/unreadable file, empty file, malformed line (named), bad field.
    """
    name = os.fspath(source)
    if name in builtin_prompt_sets():
        text = (resources.files("parallel_kit") / "data" / "prompts" / f"{name}.jsonl").read_text(
            encoding="utf-8")
        return _parse_jsonl(text, f"built-in prompt set {name!r}")
    path = Path(name)
    if not path.exists():
        raise ConfigError(
            f"prompt file {name} does not exist — give a .jsonl or .txt file, or a built-in set: "
            f"{', '.join(builtin_prompt_sets())}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompt file {name}: {exc}") from exc
    if path.suffix.lower() == ".jsonl":
        specs = _parse_jsonl(text, f"prompt file {name}")
    elif path.suffix.lower() in (".txt", ""):
        specs = [RequestSpec(prompt=line.strip()) for line in text.splitlines() if line.strip()]
    else:
        raise ConfigError(
            f"prompt file {name} has suffix {path.suffix!r} — use .jsonl (one JSON object a "
            f"line) or .txt (one prompt a line)"
        )
    if not specs:
        raise ConfigError(f"prompt file {name} has no prompts — add one prompt per line")
    return _number(specs)


def make_specs(n: int, prompts: Sequence[RequestSpec] | None = None, *,
               model: str | None = None, num_predict: int | None = None) -> list[RequestSpec]:
    """``n`` requests cycling over ``prompts`` (default: the original five).

    ``model`` and ``num_predict`` fill in what a prompt does not set itself.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a whole number of requests ≥ 1, got {n!r}")
    if num_predict is not None and (isinstance(num_predict, bool) or num_predict < 1):
        raise ConfigError(f"--num-predict must be ≥ 1 tokens, got {num_predict!r}")
    base = list(prompts) if prompts else original_prompts()
    out = []
    for i in range(n):
        p = base[i % len(base)]
        out.append(RequestSpec(prompt=p.prompt, model=p.model or model,
                               num_predict=p.num_predict if p.num_predict is not None
                               else num_predict,
                               options=dict(p.options), system=p.system, request_id=f"r{i}"))
    return out


def _parse_jsonl(text: str, where: str) -> list[RequestSpec]:
    specs: list[RequestSpec] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}, line {lineno}: not valid JSON ({exc.msg}) — each line "
                              f'must be one object like {{"prompt": "..."}}') from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}, line {lineno}: expected a JSON object with \"prompt\", "
                              f"got {type(obj).__name__}")
        unknown = set(obj) - _ALLOWED_KEYS
        if unknown:
            raise ConfigError(f"{where}, line {lineno}: unknown field(s) {sorted(unknown)} — "
                              f"allowed: {sorted(_ALLOWED_KEYS)}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f'{where}, line {lineno}: "prompt" must be a non-empty string')
        num_predict = obj.get("num_predict")
        if num_predict is not None and (not isinstance(num_predict, int)
                                        or isinstance(num_predict, bool) or num_predict < 1):
            raise ConfigError(f'{where}, line {lineno}: "num_predict" must be a whole number ≥ 1')
        options = obj.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f'{where}, line {lineno}: "options" must be an object')
        model = obj.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigError(f'{where}, line {lineno}: "model" must be a non-empty string')
        specs.append(RequestSpec(prompt=prompt, model=model, num_predict=num_predict,
                                 options=dict(options), system=obj.get("system"),
                                 request_id=str(obj.get("id", ""))))
    if not specs:
        raise ConfigError(f"{where} has no prompts — add one JSON object per line")
    return _number(specs)


def _number(specs: Iterable[RequestSpec]) -> list[RequestSpec]:
    out = list(specs)
    for i, s in enumerate(out):
        if not s.request_id:
            s.request_id = f"r{i}"
    return out
