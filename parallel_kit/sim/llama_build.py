"""Build llama.cpp's ``llama-server`` from official source, portably, once per machine.

The real engine of the kit is upstream llama.cpp ``llama-server``, the engine Ollama ≥ 0.30 runs
(ollama PR #16031). Its source comes from a registry package: the llama.cpp tree that the sdist
of ``llama-cpp-python`` ships under ``vendor/llama.cpp``. That sdist is chosen because it is on
PyPI (reachable wherever pip is), it is the llama.cpp tree its maintainers pin and test against,
and pip can check its hash (``--require-hashes``). The version and hash are pinned below.

What is built, and how:

* only the ``llama-server`` target (``cmake --build … --target llama-server``), static, with the
  web UI off (``LLAMA_BUILD_UI=OFF``, ``LLAMA_USE_PREBUILT_UI=OFF``: nothing is downloaded) and
  without OpenSSL (the server listens on loopback);
* **portable CPU flags**, never the build machine's own: ``GGML_NATIVE=OFF``, and on x86-64 the
  x86-64-v3 level (AVX, AVX2, FMA, F16C, BMI2) when the CPU reports all of them, else none of
  them (SSE baseline). AVX-512 and AMX stay off. Why: ``GGML_NATIVE`` compiles for whatever CPUID
  reports, and some machines (virtual machines especially) report AMX that the kernel does not
  grant (``arch_prctl(ARCH_GET_XCOMP_SUPP)`` lacks XTILEDATA), so a native build crashes in
  ``ggml_backend_amx_mul_mat`` on the first decode. x86-64-v3 runs on every x86-64 CPU since
  2013–2015 and is what most prebuilt llama.cpp binaries target;
* into a cache folder keyed by the sdist's hash, the flags, the compiler and the machine
  (``$PARALLEL_KIT_CACHE``, else ``$XDG_CACHE_HOME/parallel_kit``, else
  ``~/.cache/parallel_kit``, then ``llama-server/<version>-<key>/``). A binary built with other
  flags has another key and is never reused; a folder whose stamp does not match is rebuilt.

Building takes about 15–30 minutes of two cores (see the README); ``parallel-kit engine build``
or ``make engine`` does it ahead of time, and the tests and notebook 08 build it on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "SDIST_SHA256",
    "BuildInfo",
    "build_llama_server",
    "built_llama_server",
    "cache_root",
    "ensure_llama_server",
    "find_llama_server",
    "portable_cmake_flags",
]

#: The llama-cpp-python sdist whose ``vendor/llama.cpp`` tree is built (PyPI).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: Its sha256, checked by pip (``--require-hashes``) and again after download.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
#: Environment variable naming a llama-server binary to use instead of the kit's build.
BINARY_ENV = "PARALLEL_KIT_LLAMA_SERVER"
#: Environment variable naming an already downloaded sdist (checked against the hash).
SDIST_ENV = "PARALLEL_KIT_LLAMA_SDIST"

_X86_64_V3 = ("avx", "avx2", "fma", "f16c", "bmi2")
_ALWAYS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DBUILD_SHARED_LIBS=OFF",
           "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
           "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
           "-DLLAMA_BUILD_SERVER=ON", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
           "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF", "-DGGML_AVX_VNNI=OFF",
           "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """What a cached build was made from (its ``build.json``)."""

    version: str
    sdist_sha256: str
    cmake_flags: list[str]
    compiler: str
    machine: str
    key: str
    seconds: float = 0.0


def cache_root() -> Path:
    """The kit's cache folder (``$PARALLEL_KIT_CACHE``, ``$XDG_CACHE_HOME/parallel_kit`` or
    ``~/.cache/parallel_kit``)."""
    explicit = os.environ.get("PARALLEL_KIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "parallel_kit"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def portable_cmake_flags(cpu_flags: set[str] | None = None,
                         machine: str | None = None) -> list[str]:
    """The CMake flags of the kit's llama-server build for a CPU (module docstring).

    Args:
        cpu_flags: the CPU's feature names as ``/proc/cpuinfo`` spells them (default: read them).
        machine: ``platform.machine()`` (default: this one).

    Returns: the ``-D…`` list; never ``GGML_NATIVE=ON``, never AVX-512 or AMX.
    """
    flags = list(_ALWAYS)
    arch = (machine or platform.machine()).lower()
    if arch in ("x86_64", "amd64"):
        have = _cpu_flags() if cpu_flags is None else cpu_flags
        v3 = all(f in have for f in _X86_64_V3)
        state = "ON" if v3 else "OFF"
        flags += [f"-DGGML_{name.upper()}={state}" for name in _X86_64_V3]
        flags.append(f"-DGGML_SSE42={'ON' if v3 or 'sse4_2' in have else 'OFF'}")
    return flags


def find_compiler() -> str:
    for cc in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cc and shutil.which(cc):
            try:
                out = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                     timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            return out.splitlines()[0].strip() if out else cc
    return ""


def _key(flags: Sequence[str], compiler: str, machine: str) -> str:
    text = json.dumps([SDIST_SHA256, list(flags), compiler, machine])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plan() -> BuildInfo:
    flags = portable_cmake_flags()
    compiler = find_compiler()
    machine = platform.machine()
    return BuildInfo(LLAMA_CPP_PYTHON_VERSION, SDIST_SHA256, flags, compiler, machine,
                     _key(flags, compiler, machine))


def _build_dir(info: BuildInfo) -> Path:
    return cache_root() / "llama-server" / f"{info.version}-{info.key}"


def built_llama_server() -> Path | None:
    """The kit's cached llama-server for this machine's flags, or None if not built yet.

    A folder is used only when its ``build.json`` names exactly the flags, compiler and source
    hash this machine would build with now.
    """
    info = _plan()
    folder = _build_dir(info)
    binary = folder / "bin" / "llama-server"
    try:
        stamp = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return None
    same = all(stamp.get(k) == v for k, v in asdict(info).items() if k != "seconds")
    return binary if same and binary.is_file() and os.access(binary, os.X_OK) else None


def find_llama_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """The llama-server to run: ``binary``, else ``$PARALLEL_KIT_LLAMA_SERVER``, else the kit's
    build (not built here: see :func:`ensure_llama_server`).

    Raises:
        ConfigError: the named binary is missing or not executable, or nothing is built yet
            (the message says how to build it).
    """
    named = binary or os.environ.get(BINARY_ENV)
    if named:
        path = Path(named).expanduser()
        resolved = shutil.which(str(path)) if path.name == str(path) else None
        path = Path(resolved) if resolved else path
        if not path.is_file():
            raise ConfigError(f"llama-server binary {named} does not exist — give the path of a "
                              f"llama.cpp llama-server, or unset {BINARY_ENV} to use the kit's "
                              "own build (parallel-kit engine build)")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"llama-server binary {path} is not executable — chmod +x it")
        return path
    built = built_llama_server()
    if built is None:
        raise ConfigError("llama-server is not built on this machine yet — run `parallel-kit "
                          "engine build` (or `make engine`; about 15–30 min on 2 cores, once), "
                          f"or set {BINARY_ENV} to a llama-server binary")
    return built


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_sdist(into: Path, log: Callable[[str], None]) -> Path:
    """The pinned sdist, from ``$PARALLEL_KIT_LLAMA_SDIST`` or PyPI through pip, hash-checked."""
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    local = os.environ.get(SDIST_ENV)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise ConfigError(f"{SDIST_ENV}={local} does not exist — unset it to download {name}")
    else:
        req = into / "requirements.txt"
        req.write_text(f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} "
                       f"--hash=sha256:{SDIST_SHA256}\n")
        log(f"downloading {name} (the llama.cpp source) with pip")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--require-hashes", "-r", str(req), "-d", str(into)],
            capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise ConfigError(f"pip could not download {name}: {tail[0]} — check the package "
                              f"index, or download it yourself and set {SDIST_ENV}")
        path = into / name
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise ConfigError(f"{path} has sha256 {digest}, expected {SDIST_SHA256} — the file is "
                          "not the pinned llama-cpp-python sdist")
    return path


def _extract_llama_cpp(sdist: Path, into: Path) -> Path:
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise ConfigError(f"{sdist} has no vendor/llama.cpp tree")
        tar.extractall(into, members=members, filter="data")
    return into / prefix


def _run(cmd: Sequence[str], log_file: Path, what: str) -> None:
    with log_file.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = log_file.read_text(errors="replace").strip().splitlines()
        last = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines
                    else "")
        raise ConfigError(f"{what} failed ({last.strip()[:200]}) — full log in {log_file}; "
                          "needs cmake ≥ 3.14 and a C++17 compiler (apt-get install cmake g++)")


def _smoke(binary: Path) -> None:
    """Run ``llama-server --version`` in a child: a binary that cannot start is not kept."""
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"the built llama-server does not start ({exc})") from None
    if proc.returncode != 0:
        raise ConfigError(f"the built llama-server exits with {proc.returncode} on --version: "
                          f"{(proc.stderr or proc.stdout).strip()[-200:]}")


def build_llama_server(*, jobs: int | None = None, force: bool = False,
                       log: Callable[[str], None] = print) -> Path:
    """Build (or find already built) the kit's llama-server; returns the binary's path.

    Args:
        jobs: parallel compile jobs (default: the CPU count).
        force: rebuild even when a matching build exists.
        log: where progress lines go.

    Raises:
        ConfigError: download, hash, configure or build failed (the message names the log), or
            the built binary does not start; ``cmake`` missing.
    """
    info = _plan()
    folder = _build_dir(info)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if not force and (done := built_llama_server()) is not None:
            return done
        beside = Path(sys.executable).parent / "cmake"  # the PyPI cmake of the [real] extra
        cmake = str(beside) if beside.is_file() else shutil.which("cmake")
        if cmake is None:
            raise ConfigError("cmake is not installed — `pip install cmake` or "
                              "`apt-get install cmake`, then build again")
        t0 = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log_file = folder / "build.log"
        log(f"building llama-server {info.version} (llama.cpp from the llama-cpp-python sdist) "
            f"into {folder}; CPU flags on: "
            f"{' '.join(f[7:-3] for f in info.cmake_flags if f.startswith('-DGGML_') and f.endswith('=ON')) or 'none (baseline)'}")
        with tempfile.TemporaryDirectory(prefix="pk-llama-") as tmp:
            src = _extract_llama_cpp(_fetch_sdist(Path(tmp), log), Path(tmp) / "src")
            build = Path(tmp) / "build"
            _run([cmake, "-S", str(src), "-B", str(build), *info.cmake_flags], log_file,
                 "configuring llama.cpp")
            log(f"compiling llama-server with {jobs or os.cpu_count() or 1} jobs "
                f"(log: {log_file})")
            _run([cmake, "--build", str(build), "--target", "llama-server", "-j",
                  str(jobs or os.cpu_count() or 1)], log_file, "building llama-server")
            (folder / "bin").mkdir()
            binary = folder / "bin" / "llama-server"
            shutil.copy2(build / "bin" / "llama-server", binary)
            license_file = src / "LICENSE"
            if license_file.is_file():
                shutil.copy2(license_file, folder / "LICENSE")
        _smoke(binary)
        stamp = BuildInfo(**{**asdict(info), "seconds": round(time.monotonic() - t0, 1)})
        (folder / "build.json").write_text(json.dumps(asdict(stamp), indent=2) + "\n")
        log(f"llama-server built in {stamp.seconds:.0f} s: {binary}")
        return binary


def ensure_llama_server(binary: str | os.PathLike[str] | None = None, *,
                        log: Callable[[str], None] = print) -> Path:
    """A named binary (see :func:`find_llama_server`), else the kit's build, built if needed.

    Raises:
        ConfigError: as :func:`find_llama_server` and :func:`build_llama_server`.
    """
    if binary or os.environ.get(BINARY_ENV):
        return find_llama_server(binary)
    return built_llama_server() or build_llama_server(log=log)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m parallel_kit.sim.llama_build [--force]``: build and print the path."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        path = build_llama_server(force="--force" in args,
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
