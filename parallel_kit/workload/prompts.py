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

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..records import RequestSpec
from ..sim.options import OptionError, runner_options
from ..sim.prompt_cache import SALT_RE, unsalted

__all__ = ["SALT_RE", "WORKLOADS", "builtin_prompt_sets", "load_prompts", "make_specs",
           "multi_turn_specs", "new_salt", "original_prompts", "salt_specs",
           "shared_prefix_specs", "turn_of", "unsalted", "workload_specs"]

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
    from ..ranges import read_bounded

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
    from ..ranges import MAX_REQUESTS, MAX_RUN_PROMPT_BYTES, RANGES, check_text

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


# -- measurement hygiene: salted prompts -------------------------------------------------------
def new_salt() -> str:
    """A fresh random salt (8 hex digits)."""
    return secrets.token_hex(4)


def _tag(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=4).hexdigest()


def salt_specs(specs: Sequence[RequestSpec], salt: str, *,
               per_request: bool = True) -> list[RequestSpec]:
    """``specs`` with a salt tag (``[3fa9c2e1]`` and a space) before what the server sees
    first: the system prompt when there is one, else the prompt.

    Since Ollama 0.30 the engine reuses any prompt prefix it has seen (llama-server's
    ``cache_prompt``, which Ollama always turns on, and its host-RAM cache): a prompt sent
    again costs one token of prefill, and a benchmark that repeats its prompts measures the
    cache, not the model (vLLM's benchmark showed TTFT 49× too low that way,
    vllm-project/vllm#54227). The salt makes each prompt new to the server.

    Args:
        salt: the run's salt (``new_salt()``, or one the user gives to repeat a run).
        per_request: True: every request gets its own line (a hash of the salt and its
            ``request_id``), so no two share even the line; False: one line for the whole run,
            which keeps what its prompts share on purpose (a common system prompt, a
            conversation's history) and hides only earlier runs.
    """
    out = []
    for s in specs:
        tag = _tag(f"{salt}/{s.request_id}" if per_request else salt)
        line = f"[{tag}] "  # no newline: a results CSV keeps one line a row
        if s.system:
            out.append(replace(s, system=line + s.system, options=dict(s.options)))
        else:
            out.append(replace(s, prompt=line + s.prompt, options=dict(s.options)))
    return out


# -- workloads that share prefixes on purpose --------------------------------------------------
#: Workloads made by :func:`workload_specs`: ``shared-prefix`` (one long system prompt, then a
#: question) and ``multi-turn`` (conversations whose history grows turn by turn).
WORKLOADS = ("shared-prefix", "multi-turn")

_SYSTEM = ("You are a patient teaching assistant for a course on parallel computing and LLM "
           "serving. Answer in plain words, give one small example, and say which measurement "
           "would show the effect. ")


def _system_prompt(tokens: int) -> str:
    """A system prompt of about ``tokens`` simulated tokens (4 bytes each)."""
    text = _SYSTEM
    while len(text.encode("utf-8")) < 4 * tokens:
        text += _SYSTEM
    return text[: 4 * tokens]


def shared_prefix_specs(n: int, *, prefix_tokens: int = 500,
                        questions: Sequence[RequestSpec] | None = None,
                        model: str | None = None,
                        num_predict: int | None = None) -> list[RequestSpec]:
    """``n`` requests that share a system prompt of ``prefix_tokens`` tokens (in the prompt
    text, so every API sends it first), each ending with its own question.

    Raises:
        ConfigError: ``n`` < 1 or ``prefix_tokens`` < 1.
    """
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) \
            or prefix_tokens < 1:
        raise ConfigError(f"prefix_tokens must be a whole number ≥ 1, got {prefix_tokens!r}")
    base = make_specs(n, questions, model=model, num_predict=num_predict)
    system = _system_prompt(prefix_tokens)
    return [replace(s, prompt=f"{system}\n\nQuestion {i}: {s.prompt}", source_id=f"q{i}")
            for i, s in enumerate(base)]


def multi_turn_specs(conversations: int, turns: int, *, prefix_tokens: int = 100,
                     questions: Sequence[RequestSpec] | None = None,
                     model: str | None = None, num_predict: int | None = None,
                     reply_tokens: int = 30) -> list[RequestSpec]:
    """Conversations that grow: turn ``t`` of a conversation sends its system prompt, every
    earlier question with a stand-in reply of ``reply_tokens`` tokens, and its new question.
    Requests come turn by turn, the conversations taking turns (c0 t0, c1 t0, …, c0 t1, …);
    ``request_id`` and ``source_id`` are ``c<c>.t<t>`` (:func:`turn_of` reads the turn).

    The stand-in reply is not the server's own answer (the requests are made before any
    runs), so a slot holding a conversation reuses its history up to the last reply.

    Raises:
        ConfigError: a count below 1.
    """
    for label, v in (("conversations", conversations), ("turns", turns),
                     ("reply_tokens", reply_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{label} must be a whole number ≥ 1, got {v!r}")
    qs = make_specs(conversations * turns, questions, model=model, num_predict=num_predict)
    system = _system_prompt(prefix_tokens)
    reply = ("Here is a short answer with an example. " * (reply_tokens // 10 + 1))[
        : 4 * reply_tokens]
    out: list[RequestSpec] = []
    history = [f"System: conversation {c}. {system}" for c in range(conversations)]
    for t in range(turns):
        for c in range(conversations):
            q = qs[t * conversations + c]
            prompt = f"{history[c]}\nUser: {q.prompt}"
            rid = f"c{c}.t{t}"
            out.append(replace(q, prompt=prompt, request_id=rid, source_id=rid))
            history[c] = f"{prompt}\nAssistant: {reply}"
    return out


def turn_of(row_id: str | None) -> int | None:
    """The turn in a ``c<c>.t<t>`` id (:func:`multi_turn_specs`); None for another id."""
    m = re.fullmatch(r"c\d+\.t(\d+)", row_id or "")
    return int(m.group(1)) if m else None


def workload_specs(name: str, n: int, *, questions: Sequence[RequestSpec] | None = None,
                   model: str | None = None, num_predict: int | None = None,
                   conversations: int = 3) -> list[RequestSpec]:
    """``n`` requests of a named workload (:data:`WORKLOADS`); ``multi-turn`` makes
    ``conversations`` conversations of ⌈n ÷ conversations⌉ turns, cut to ``n`` requests.

    Raises:
        ConfigError: an unknown name (the known ones listed), a bad count.
    """
    if name == "shared-prefix":
        return shared_prefix_specs(n, questions=questions, model=model,
                                   num_predict=num_predict)
    if name == "multi-turn":
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"--n must be a whole number of requests ≥ 1, got {n!r}")
        conv = max(1, min(conversations, n))
        turns = -(-n // conv)
        return multi_turn_specs(conv, turns, questions=questions, model=model,
                                num_predict=num_predict)[:n]
    raise ConfigError(f"unknown workload {name!r} — choose from {', '.join(WORKLOADS)}")
