"""Prompt sets: the workshop's own, and the user's files.

Formats, chosen by the file's suffix:

``.jsonl``
    One JSON object a line with ``prompt`` and optional ``model``, ``num_predict``,
    ``options``, ``system``, ``id``; or a ShareGPT record (below) a line.
``.json``
    A ShareGPT file: a JSON list of ``{"id"?, "conversations": [{"from": "human", "value":
    "…"}, {"from": "gpt", …}, …]}``; the first human turn (``from`` ``human`` or ``user``) is
    the prompt, as vLLM's and GuideLLM's benchmarks read it. Records without one are skipped.
``.txt``
    One prompt a line (blank lines skipped).

A UTF-8 byte-order mark (Windows tools, Excel exports) is dropped. The whole file is checked
before anything runs: every problem — a line that is not JSON, a missing prompt, ``system``
that is not a string, ``num_predict`` that is not a whole number, an ``options`` value of a type
Ollama refuses (``api.Options.FromMap``) — is one :class:`~parallel_kit.errors.ConfigError`
naming the file and the line (or record).
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
from .sim.options import OptionError, runner_options

__all__ = ["builtin_prompt_sets", "load_prompts", "make_specs", "original_prompts"]

_ALLOWED_KEYS = {"prompt", "model", "num_predict", "options", "system", "id"}
_HUMAN = ("human", "user")


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with the kit (``original``, ``workshop``)."""
    folder = resources.files("parallel_kit") / "data" / "prompts"
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir()
                  if p.name.endswith(".jsonl"))


def original_prompts() -> list[RequestSpec]:
    """The original demo's five prompts ("What is Python?" and the like)."""
    return load_prompts("original")


def load_prompts(source: str | os.PathLike[str]) -> list[RequestSpec]:
    """Load prompts from a ``.jsonl``, ShareGPT ``.json`` or ``.txt`` file, or a built-in set.

    Raises:
        ConfigError: missing/unreadable file, empty file, malformed line or field (named).
    """
    name = os.fspath(source)
    if name in builtin_prompt_sets():
        text = (resources.files("parallel_kit") / "data" / "prompts" / f"{name}.jsonl").read_text(
            encoding="utf-8-sig")
        return _parse_jsonl(text, f"built-in prompt set {name!r}")
    path = Path(name)
    if not path.exists():
        raise ConfigError(
            f"prompt file {name} does not exist — give a .jsonl, .json (ShareGPT) or .txt file, "
            f"or a built-in set: {', '.join(builtin_prompt_sets())}"
        )
    from .ranges import read_bounded

    try:  # -sig: a byte-order mark is dropped; at most MAX_FILE_BYTES are read
        text = read_bounded(path, "prompt file", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read prompt file {name}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        specs = _parse_jsonl(text, f"prompt file {name}")
    elif suffix == ".json":
        specs = _parse_sharegpt_file(text, f"prompt file {name}")
    elif suffix in (".txt", ""):
        specs = [RequestSpec(prompt=line.strip()) for line in text.splitlines() if line.strip()]
    else:
        raise ConfigError(
            f"prompt file {name} has suffix {path.suffix!r} — use .jsonl (one JSON object a "
            f"line), .json (ShareGPT conversations) or .txt (one prompt a line)"
        )
    if not specs:
        raise ConfigError(f"prompt file {name} has no prompts — add one prompt per line")
    _check_bounds(specs, f"prompt file {name}")
    return _number(specs)


def _check_bounds(specs: Sequence[RequestSpec], where: str) -> None:
    """The bounds of :mod:`parallel_kit.ranges` on what a file holds: prompts, text, tokens."""
    from .ranges import MAX_REQUESTS, MAX_RUN_PROMPT_BYTES, RANGES, check_text

    if len(specs) > MAX_REQUESTS:
        raise ConfigError(f"{where} holds {len(specs):,} prompts — more than {MAX_REQUESTS:,}, "
                          f"the most one run holds (the bound of --n); split it")
    np_range = RANGES["--num-predict"]
    total = 0
    for i, s in enumerate(specs, start=1):
        for label, text in (("prompt", s.prompt), ("system", s.system), ("model", s.model),
                            ("id", s.source_id)):
            if text is not None:
                check_text(text, f'{where}, prompt {i}: "{label}"')
        if s.num_predict is not None and not np_range.lo <= s.num_predict <= np_range.hi:
            raise ConfigError(f'{where}, prompt {i}: "num_predict" {s.num_predict} is outside '
                              f"{np_range.text()} ({np_range.what})")
        total += len(s.prompt) + len(s.system or "")
    if total > MAX_RUN_PROMPT_BYTES:
        raise ConfigError(f"{where}: its prompts pass {MAX_RUN_PROMPT_BYTES // 2**20} MiB, the "
                          f"most one run holds — fewer or shorter prompts")


def make_specs(n: int, prompts: Sequence[RequestSpec] | None = None, *,
               model: str | None = None, num_predict: int | None = None) -> list[RequestSpec]:
    """``n`` requests cycling over ``prompts`` (default: the original five).

    ``model`` and ``num_predict`` fill in what a prompt does not set itself; each request gets
    the id ``r<i>`` of its place in the run and keeps the prompt's ``source_id``.
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
                               options=dict(p.options), system=p.system, request_id=f"r{i}",
                               source_id=p.source_id))
    return out


def _parse_jsonl(text: str, where: str) -> list[RequestSpec]:
    specs: list[RequestSpec] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        at = f"{where}, line {lineno}"
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{at}: not valid JSON ({exc.msg}) — each line must be one "
                              f'object like {{"prompt": "..."}}') from None
        if isinstance(obj, dict) and "conversations" in obj:
            spec = _sharegpt_record(obj, at)
            if spec is not None:
                specs.append(spec)
            continue
        specs.append(_spec(obj, at))
    if not specs:
        raise ConfigError(f"{where} has no prompts — add one JSON object per line")
    _check_bounds(specs, where)
    return _number(specs)


def _spec(obj: Any, at: str) -> RequestSpec:
    """One JSONL prompt object, checked field by field."""
    if not isinstance(obj, dict):
        raise ConfigError(f'{at}: expected a JSON object with "prompt", got '
                          f"{type(obj).__name__}")
    unknown = set(obj) - _ALLOWED_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown field(s) {sorted(unknown)} — allowed: "
                          f"{sorted(_ALLOWED_KEYS)}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f'{at}: "prompt" must be a non-empty string')
    num_predict = obj.get("num_predict")
    if num_predict is not None and (not isinstance(num_predict, int)
                                    or isinstance(num_predict, bool) or num_predict < 1):
        raise ConfigError(f'{at}: "num_predict" must be a whole number ≥ 1, got '
                          f"{num_predict!r}")
    options = obj.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f'{at}: "options" must be an object like {{"temperature": 0}}, got '
                          f"{type(options).__name__}")
    try:
        runner_options(options)
    except OptionError as exc:
        raise ConfigError(f"{at}: {exc} (Ollama would answer 500)") from None
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f'{at}: "system" must be a string, got {type(system).__name__}')
    model = obj.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigError(f'{at}: "model" must be a non-empty string')
    source_id = obj.get("id")
    if source_id is not None and (isinstance(source_id, bool)
                                  or not isinstance(source_id, (str, int))):
        raise ConfigError(f'{at}: "id" must be a string or a whole number')
    return RequestSpec(prompt=prompt, model=model, num_predict=num_predict,
                       options=dict(options), system=system,
                       source_id=None if source_id is None else str(source_id))


def _sharegpt_record(obj: dict[str, Any], at: str) -> RequestSpec | None:
    """The first human turn of a ShareGPT record; None when it has none."""
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        raise ConfigError(f'{at}: "conversations" must be a list of {{"from", "value"}} turns')
    for turn in turns:
        if not isinstance(turn, dict):
            raise ConfigError(f'{at}: each turn of "conversations" must be an object with '
                              f'"from" and "value"')
        if str(turn.get("from", "")).lower() in _HUMAN:
            value = turn.get("value")
            if not isinstance(value, str):
                raise ConfigError(f'{at}: the human turn\'s "value" must be a string')
            if not value.strip():
                return None
            source_id = obj.get("id")
            return RequestSpec(prompt=value,
                               source_id=None if source_id is None else str(source_id))
    return None


def _parse_sharegpt_file(text: str, where: str) -> list[RequestSpec]:
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno}) — a .json "
                          f"prompt file is a ShareGPT list of {{\"conversations\": [...]}}"
                          ) from None
    if not isinstance(doc, list):
        raise ConfigError(f'{where}: expected a JSON list of {{"conversations": [...]}} records '
                          f"(ShareGPT), got {type(doc).__name__}")
    specs = []
    for i, record in enumerate(doc):
        at = f"{where}, record {i}"
        if not isinstance(record, dict) or "conversations" not in record:
            raise ConfigError(f'{at}: expected {{"conversations": [{{"from": "human", '
                              f'"value": "..."}}, ...]}}')
        spec = _sharegpt_record(record, at)
        if spec is not None:
            specs.append(spec)
    if not specs:
        raise ConfigError(f"{where} has no conversation with a human turn — nothing to send")
    return specs


def _number(specs: Iterable[RequestSpec]) -> list[RequestSpec]:
    out = list(specs)
    for i, s in enumerate(out):
        if not s.request_id:
            s.request_id = f"r{i}"
    return out
