"""Speed profiles of the simulated Ollama: how fast a machine runs each model.

A :class:`Profile` is one machine (``rtx4090``, ``m1-max``, …, or ``seed``, the original
analysis: every request 10 s). For each model it serves it holds a :class:`ModelSpeed`:
decode and prefill tokens/s of one request alone, load time, answer length. ``S(k)`` says how
much faster the machine decodes *in total* with k requests at once (batched decoding); each of
the k gets ``decode_tps × S(k) / k`` tokens/s. All times are **model seconds** (what a real
Ollama would take); a simulator at time scale F sleeps F × these.

Profiles live in JSON (``parallel_kit/data/profiles.json``; every figure has its source beside
it). A user file named by ``PARALLEL_KIT_PROFILES`` (or the ``path`` argument) is searched first,
so measured profiles (``save_profile``) can override and extend the packaged ones. Schema::

    {"schema": 1, "profiles": {"<name>": {
        "description": str, "num_parallel": int, "gpu_memory": bytes | null, "gpus": int,
        "service_cv": float (optional, default 0),
        "prefill_in_batch": bool (optional, default false),
        "prompt_tokens": {"template": int, "bytes_per_token": float} (optional; default
            0 and 4.0),
        "scaling": {"points": [[k, S(k)], ...], "source": str},
        "default_model": str,
        "models": {"<model>": {"decode_tps": float, "prefill_tps": float | null (instant),
                               "prefill_overhead_s": float (optional, default 0),
                               "request_overhead_s": float (optional, default 0),
                               "load_s": float, "output_tokens": [min, max],
                               "aliases": [str], "size": bytes, "parameter_size": str,
                               "quantization_level": str, "family": str,
                               "context_length": int, "kv_bytes_per_token": int,
                               "capabilities": [str], "sources": {"<field>": str}}}}}}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .prompt_cache import unsalted

__all__ = [
    "PROFILES_ENV",
    "ModelSpeed",
    "Profile",
    "list_profiles",
    "load_profile",
    "save_profile",
]

#: Environment variable naming a user profile file searched before the packaged one.
PROFILES_ENV = "PARALLEL_KIT_PROFILES"
_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class ModelSpeed:
    """How one model runs on the profile's machine (model seconds, tokens).

    Args:
        name: the model's name as Ollama lists it (``llama3.2:3b``).
        decode_tps: tokens/s of one request decoding alone.
        prefill_tps: prompt tokens/s; ``None`` means prompt processing takes no time.
        prefill_overhead_s: model seconds every prompt costs on top of its tokens (the
            batch's fixed cost; measured by :func:`~parallel_kit.calibrate.measure_prompts`,
            0 for the packaged profiles).
        request_overhead_s: model seconds every request takes, holding its slot, besides its
            prefill and decode as the server times them (HTTP, the chat template, the
            server's bookkeeping before and after; measured by ``probe`` as the client's
            latency alone minus the server's durations; 0 for the packaged profiles).
        load_s: seconds to load the model before its first request.
        output_tokens: (min, max) answer length when the request gives no ``num_predict``.
        aliases: other names for the same model (``llama3.2:latest``).
        size: bytes of the weights (what ``/api/tags`` shows and loading takes).
        context_length: the model's own (trained) context, the most ``num_ctx`` can be.
        kv_bytes_per_token: KV-cache bytes per token of context (2 × layers × KV heads ×
            head size × 2 bytes at f16); 0 = not modelled (the context takes no memory).
        capabilities: what ``/api/show`` lists (``completion``, ``tools``, ``thinking``, …).
        sources: where each figure comes from, by field name.
    """

    name: str
    decode_tps: float
    prefill_tps: float | None = None
    load_s: float = 0.0
    output_tokens: tuple[int, int] = (100, 100)
    prefill_overhead_s: float = 0.0
    request_overhead_s: float = 0.0
    aliases: tuple[str, ...] = ()
    size: int = 2_000_000_000
    parameter_size: str = ""
    quantization_level: str = "Q4_K_M"
    family: str = "llama"
    context_length: int = 4096
    kv_bytes_per_token: int = 0
    capabilities: tuple[str, ...] = ("completion",)
    sources: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decode_tps": self.decode_tps, "prefill_tps": self.prefill_tps,
            **({"prefill_overhead_s": self.prefill_overhead_s}
               if self.prefill_overhead_s else {}),
            **({"request_overhead_s": self.request_overhead_s}
               if self.request_overhead_s else {}),
            "load_s": self.load_s, "output_tokens": list(self.output_tokens),
            "aliases": list(self.aliases), "size": self.size,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level, "family": self.family,
            "context_length": self.context_length,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "capabilities": list(self.capabilities), "sources": dict(self.sources),
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """One machine's speeds: see the module docstring. Build with :func:`load_profile`.

    Args:
        name: the profile's name (``seed``, ``rtx4090``, …).
        models: speeds by model name (aliases not included).
        default_model: the model whose speeds the single-model methods use by default, and
            that a served name without its own entry runs at.
        scaling: ``(k, S(k))`` points, k ascending, starting at ``(1, 1.0)``.
        num_parallel: slots per model when neither the caller nor ``OLLAMA_NUM_PARALLEL`` says.
        gpu_memory: bytes of memory of one GPU (None = no GPU memory limit is modelled).
        gpus: GPUs of the machine (Ollama's default ``OLLAMA_MAX_LOADED_MODELS`` is 3 per GPU).
        service_cv: coefficient of variation of one request's service time alone, request to
            request (a real machine's jitter, measured by ``probe`` with repeats; 0 for the
            packaged profiles). The simulator itself stays deterministic; theory's latency
            predictions under load draw it in (``theory.predict_load``).
        prefill_in_batch: prompt tokens are processed in the same batch as the other slots'
            decode tokens, one batch at a time, as llama-server's ``update_slots`` builds it
            (``tools/server/server.cpp``: decode tokens first, then prompt tokens up to
            ``n_batch``): a prompt being processed lengthens the step of every request that
            decodes, and waits for the step under way. ``False`` (the packaged profiles, the
            teaching model): a prompt is processed beside the batch and costs the others
            nothing. Profiles measured on llama-server set it.
        template_tokens: tokens the server adds to every prompt (the model's chat template
            and BOS, which Ollama applies to ``/api/generate`` prompts too); 0 for the packaged
            profiles.
        bytes_per_token: UTF-8 bytes per token of the model's tokenizer on ordinary text (4.0,
            the usual rule of thumb for English, unless measured).
    """

    name: str
    models: Mapping[str, ModelSpeed]
    default_model: str
    scaling: tuple[tuple[int, float], ...] = ((1, 1.0),)
    num_parallel: int = 1
    description: str = ""
    scaling_source: str = ""
    gpu_memory: int | None = None
    gpus: int = 1
    service_cv: float = 0.0
    prefill_in_batch: bool = False
    template_tokens: int = 0
    bytes_per_token: float = 4.0

    # -- the latency model ---------------------------------------------------------------
    def S(self, k: int) -> float:
        """Aggregate decode speed-up with ``k`` requests decoding at once (S(1) = 1).

        Linear between the profile's points, flat after the last one; S(0) = 0.
        """
        if k <= 0:
            return 0.0
        pts = self.scaling
        if k <= pts[0][0]:
            return pts[0][1]
        for (k0, s0), (k1, s1) in itertools.pairwise(pts):
            if k <= k1:
                return s0 + (s1 - s0) * (k - k0) / (k1 - k0)
        return pts[-1][1]

    def speed(self, model: str | None = None) -> ModelSpeed:
        """Speeds of ``model`` (a name or alias); the default model's for any other name."""
        if model is None:
            return self.models[self.default_model]
        if model in self.models:
            return self.models[model]
        for m in self.models.values():
            if model in m.aliases:
                return m
        return self.models[self.default_model]

    def model_names(self) -> list[str]:
        """Every name the profile serves by default, aliases included."""
        names: list[str] = []
        for m in self.models.values():
            names.append(m.name)
            names.extend(m.aliases)
        return names

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the server processes for a prompt: the template's tokens plus one per
        ``bytes_per_token`` UTF-8 bytes (at least one; 0 for an empty prompt)."""
        if not prompt:
            return 0
        return self.template_tokens + max(
            1, math.ceil(len(prompt.encode("utf-8")) / self.bytes_per_token))

    def output_tokens(self, prompt: str, *, seed: int | None = None,
                      num_predict: int | None = None, model: str | None = None) -> int:
        """Tokens of the answer: ``num_predict`` when > 0, else drawn from the model's
        ``output_tokens`` range, the same for the same prompt and seed (Ollama: 0 and negative
        ``num_predict`` mean no limit)."""
        if num_predict is not None and num_predict > 0:
            return int(num_predict)
        lo, hi = self.speed(model).output_tokens
        if lo >= hi:
            return lo
        # A salt tag (the kit's measurement hygiene) does not change the answer.
        return lo + stable_hash(unsalted(prompt), seed) % (hi - lo + 1)

    def prefill_s(self, prompt_tokens: int, model: str | None = None) -> float:
        """Model seconds to process ``prompt_tokens`` prompt tokens (none: 0): the model's
        ``prefill_overhead_s`` plus the tokens at ``prefill_tps``."""
        speed = self.speed(model)
        if not speed.prefill_tps or prompt_tokens <= 0:
            return 0.0
        return speed.prefill_overhead_s + prompt_tokens / speed.prefill_tps

    def per_request_tps(self, concurrent: int, model: str | None = None) -> float:
        """Tokens/s each of ``concurrent`` requests decoding together gets."""
        k = max(1, concurrent)
        return self.speed(model).decode_tps * self.S(k) / k

    def service_time_s(self, prompt_tokens: int, output_tokens: int, concurrent: int = 1,
                       model: str | None = None) -> float:
        """Model seconds one request takes once it has a slot: its ``request_overhead_s``, its
        prefill, then decoding while
        ``concurrent`` requests (itself included) decode the whole time. Load and queueing
        are not included (see :meth:`load_s`)."""
        return (self.speed(model).request_overhead_s + self.prefill_s(prompt_tokens, model)
                + output_tokens / self.per_request_tps(concurrent, model))

    def load_s(self, model: str | None = None) -> float:
        """Model seconds to load ``model`` before its first request."""
        return self.speed(model).load_s

    def to_dict(self) -> dict[str, Any]:
        """The profile as its JSON entry (see the module docstring)."""
        return {
            "description": self.description, "num_parallel": self.num_parallel,
            "gpu_memory": self.gpu_memory, "gpus": self.gpus,
            **({"service_cv": self.service_cv} if self.service_cv else {}),
            **({"prefill_in_batch": True} if self.prefill_in_batch else {}),
            **({"prompt_tokens": {"template": self.template_tokens,
                                  "bytes_per_token": self.bytes_per_token}}
               if (self.template_tokens, self.bytes_per_token) != (0, 4.0) else {}),
            "scaling": {"points": [list(p) for p in self.scaling],
                        "source": self.scaling_source},
            "default_model": self.default_model,
            "models": {n: m.to_dict() for n, m in self.models.items()},
        }


def stable_hash(text: str, seed: int | None) -> int:
    """A 64-bit hash of (text, seed) that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# -- files ---------------------------------------------------------------------------------
def _packaged_text() -> str:
    # Next to the package's code (works for installed, editable and zipped-free layouts).
    return (Path(__file__).resolve().parent.parent / "data" / "profiles.json").read_text(
        encoding="utf-8")


def user_profiles_path() -> Path:
    """The user's profile file: ``PARALLEL_KIT_PROFILES``, else
    ``$XDG_CONFIG_HOME/parallel_kit/profiles.json`` (``~/.config/…``) — where
    ``parallel-kit probe --save-profile`` writes."""
    env = os.environ.get(PROFILES_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "parallel_kit" / "profiles.json"


def _user_path(path: str | os.PathLike[str] | None) -> Path | None:
    if path is not None:
        return Path(path)
    if os.environ.get(PROFILES_ENV, "").strip():
        return user_profiles_path()
    default = user_profiles_path()
    return default if default.exists() else None


def _read_file(path: Path, origin: str) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"profile file {path} ({origin}) does not exist — create it with "
                          f"parallel_kit.sim.profiles.save_profile or fix the path")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read profile file {path} ({origin}): {exc}") from exc
    return _entries(doc, str(path))


def _entries(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), dict):
        raise ConfigError(f'{where} is not a profile file — it needs {{"profiles": {{...}}}}')
    return doc["profiles"]


def _all_entries(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Packaged profiles, overridden by the user file's (argument, else the env variable)."""
    entries = dict(_entries(json.loads(_packaged_text()), "the packaged profiles.json"))
    user = _user_path(path)
    # A path given explicitly must exist. The environment's may name a file that
    # `probe --save-profile` has not written yet: then the packaged profiles are used, but
    # never silently (a misspelt variable looks the same) — a note says so once, and a
    # profile that is not packaged is an error naming the missing file (load_profile).
    if user is not None and (path is not None or user.exists()):
        origin = "given as path" if path is not None else f"from {PROFILES_ENV}"
        entries.update(_read_file(user, origin))
    elif user is not None and str(user) not in _noted_missing:
        _noted_missing.add(str(user))
        print(f"note: {PROFILES_ENV}={user} does not exist (yet) — using the packaged "
              f"profiles; `parallel-kit probe --save-profile NAME` creates it", file=sys.stderr)
    return entries


#: Missing files named by the environment already noted (one note per file and process).
_noted_missing: set[str] = set()


def list_profiles(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of every profile: packaged ones and those in the user file."""
    return sorted(_all_entries(path))


def load_profile(name: str | Profile = "seed",
                 path: str | os.PathLike[str] | None = None) -> Profile:
    """The profile called ``name``, from the user file (``path`` or ``PARALLEL_KIT_PROFILES``)
    first, then the packaged ones.

    Raises:
        ConfigError: unknown name (the message lists the known ones) or a malformed entry.
    """
    if isinstance(name, Profile):
        return name
    entries = _all_entries(path)
    if name not in entries:
        user = _user_path(path)
        if user is not None and not user.exists():
            raise ConfigError(f"unknown simulator profile {name!r}: the profile file {user} "
                              f"({PROFILES_ENV}) does not exist — fix the path, or create it "
                              f"with `parallel-kit probe --save-profile {name}`")
        raise ConfigError(f"unknown simulator profile {name!r} — choose from "
                          f"{', '.join(sorted(entries))}")
    return profile_from_dict(name, entries[name])


def save_profile(profile: Profile, path: str | os.PathLike[str] | None = None) -> Path:
    """Add or replace ``profile`` in a user profile file (``path``, else
    ``PARALLEL_KIT_PROFILES``), keeping the file's other profiles. Returns the file's path."""
    target = _user_path(path)
    if target is None:
        raise ConfigError(f"no profile file to write to — pass path= or set {PROFILES_ENV}")
    doc: dict[str, Any] = {"schema": _SCHEMA, "profiles": {}}
    if target.exists():
        doc["profiles"] = _read_file(target, "to update")
    doc["profiles"][profile.name] = profile.to_dict()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def profile_from_dict(name: str, entry: Any) -> Profile:
    """Build and check a :class:`Profile` from its JSON entry."""
    where = f"profile {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object")
    models_raw = entry.get("models")
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError(f"{where} needs a non-empty 'models' object")
    models = {m: _model_from_dict(m, v, where) for m, v in models_raw.items()}
    default = entry.get("default_model", next(iter(models)))
    if default not in models:
        raise ConfigError(f"{where}: default_model {default!r} is not one of its models "
                          f"({', '.join(models)})")
    scaling_raw = entry.get("scaling", {})
    points = _scaling_points(scaling_raw.get("points", [[1, 1.0]]), where)
    num_parallel = entry.get("num_parallel", 1)
    if not isinstance(num_parallel, int) or num_parallel < 1:
        raise ConfigError(f"{where}: num_parallel must be a whole number ≥ 1")
    gpu_memory = entry.get("gpu_memory")
    if gpu_memory is not None and (isinstance(gpu_memory, bool)
                                   or not isinstance(gpu_memory, int) or gpu_memory < 1):
        raise ConfigError(f"{where}: gpu_memory must be bytes (a whole number ≥ 1) or null")
    gpus = entry.get("gpus", 1)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"{where}: gpus must be a whole number ≥ 1")
    service_cv = entry.get("service_cv", 0.0)
    if (isinstance(service_cv, bool) or not isinstance(service_cv, (int, float))
            or not math.isfinite(service_cv) or service_cv < 0):
        raise ConfigError(f"{where}: service_cv must be a number ≥ 0 (0: no jitter)")
    in_batch = entry.get("prefill_in_batch", False)
    if not isinstance(in_batch, bool):
        raise ConfigError(f"{where}: prefill_in_batch must be true or false")
    tok = entry.get("prompt_tokens", {})
    template = tok.get("template", 0) if isinstance(tok, dict) else None
    bpt = tok.get("bytes_per_token", 4.0) if isinstance(tok, dict) else None
    if (isinstance(template, bool) or not isinstance(template, int) or template < 0
            or isinstance(bpt, bool) or not isinstance(bpt, (int, float))
            or not math.isfinite(bpt) or bpt <= 0):
        raise ConfigError(f"{where}: prompt_tokens must be {{\"template\": a whole number ≥ 0, "
                          f"\"bytes_per_token\": a number > 0}}")
    return Profile(name=name, models=models, default_model=default, scaling=points,
                   num_parallel=num_parallel, description=str(entry.get("description", "")),
                   scaling_source=str(scaling_raw.get("source", "")), gpu_memory=gpu_memory,
                   gpus=gpus, service_cv=float(service_cv), prefill_in_batch=in_batch,
                   template_tokens=template, bytes_per_token=float(bpt))


def _scaling_points(raw: Any, where: str) -> tuple[tuple[int, float], ...]:
    try:
        points = tuple((int(k), float(s)) for k, s in raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: scaling points must be [[k, S(k)], ...]") from None
    if not points or points[0] != (1, 1.0):
        raise ConfigError(f"{where}: scaling points must start with [1, 1.0] (S(1) = 1)")
    for (k0, s0), (k1, s1) in itertools.pairwise(points):
        if k1 <= k0 or s1 < s0:
            raise ConfigError(f"{where}: scaling points must rise in k and never fall in S")
    for k, s in points:
        # S(k) ≤ k: k requests together never decode faster each than one alone.
        if s > k:
            raise ConfigError(f"{where}: S({k}) = {s} is more than {k} — impossible")
    return points


def _model_from_dict(name: str, raw: Any, where: str) -> ModelSpeed:
    where = f"{where}, model {name!r}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a JSON object")

    def positive(key: str, value: Any, allow_none: bool = False,
                 allow_zero: bool = False) -> Any:
        if value is None and allow_none:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            value > 0 or (allow_zero and value == 0))
        if not ok:
            raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
        return float(value)

    out = raw.get("output_tokens", [100, 100])
    if (not isinstance(out, Sequence) or len(out) != 2
            or not all(isinstance(x, int) and x >= 0 for x in out) or out[0] > out[1]):
        raise ConfigError(f"{where}: output_tokens must be [min, max] whole numbers")
    return ModelSpeed(
        name=name,
        decode_tps=positive("decode_tps", raw.get("decode_tps")),
        prefill_tps=positive("prefill_tps", raw.get("prefill_tps"), allow_none=True),
        load_s=positive("load_s", raw.get("load_s", 0.0), allow_zero=True),
        prefill_overhead_s=positive("prefill_overhead_s", raw.get("prefill_overhead_s", 0.0),
                                    allow_zero=True),
        request_overhead_s=positive("request_overhead_s", raw.get("request_overhead_s", 0.0),
                                    allow_zero=True),
        output_tokens=(int(out[0]), int(out[1])),
        aliases=tuple(str(a) for a in raw.get("aliases", [])),
        size=int(raw.get("size", 2_000_000_000)),
        parameter_size=str(raw.get("parameter_size", "")),
        quantization_level=str(raw.get("quantization_level", "Q4_K_M")),
        family=str(raw.get("family", "llama")),
        context_length=int(raw.get("context_length", 4096)),
        kv_bytes_per_token=int(raw.get("kv_bytes_per_token", 0)),
        capabilities=tuple(str(c) for c in raw.get("capabilities", ["completion"])),
        sources=dict(raw.get("sources", {})),
    )
