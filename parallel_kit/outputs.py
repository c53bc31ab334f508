"""Output files that cannot lose a finished run: checked before it starts, rescued after.

A run can take minutes; an unwritable ``--json`` path found only when the run is over threw all
of it away (a traceback, no file). So:

* :func:`check_writable` runs before the clock starts: each path's folder must exist or be
  creatable and be writable, the path must not be a folder, and a figure's suffix must be a
  format matplotlib writes — a :class:`~parallel_kit.errors.ConfigError` naming the flag and
  the cause otherwise;
* :func:`write_or_rescue` writes a file and, when that still fails (disk full, the folder removed
  meanwhile), writes it to a fallback file in the system's temporary folder and says where.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import ConfigError

__all__ = ["check_figure_format", "check_writable", "fallback_path", "write_or_rescue"]


def figure_formats() -> list[str]:
    """The file suffixes (no dot, lower case) matplotlib's default canvas can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_figure_format(flag: str, raw: str | os.PathLike[str] | None) -> None:
    """Check that a figure path's suffix is a format matplotlib writes (none means PNG).

    Raises:
        ConfigError: naming the flag, the suffix and the formats there are.
    """
    if raw is None or raw == "":
        return
    suffix = Path(raw).suffix.lower().lstrip(".")
    if suffix and suffix not in figure_formats():
        raise ConfigError(f"{flag} {os.fspath(raw)}: a figure cannot be written as .{suffix} — "
                          f"end the name in one of {', '.join('.' + f for f in figure_formats())}")


def check_writable(paths: Iterable[tuple[str, str | os.PathLike[str] | None]], *,
                   folders: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
                   figures: Iterable[tuple[str, str | os.PathLike[str] | None]] = ()) -> None:
    """Check output paths before a run: ``(flag, path)`` pairs; ``None`` paths are skipped.

    ``paths`` are files (their folder is created when missing); ``folders`` are output
    folders (created when missing); ``figures`` are files whose suffix must also be a figure
    format (:func:`check_figure_format`).

    Raises:
        ConfigError: the first path that cannot be written, naming the flag and the reason.
    """
    figures = list(figures)
    for flag, raw in figures:
        check_figure_format(flag, raw)
    paths = [*paths, *figures]
    folders = list(folders)
    for flag, raw in [*paths, *folders]:
        if raw is not None and "\x00" in os.fspath(raw):
            raise ConfigError(f"{flag} {os.fspath(raw)!a} holds a NUL byte, which no file name "
                              f"can — choose another path")
    for flag, raw, path in _given(paths):
        if path.is_dir():
            raise ConfigError(f"{flag} {raw} is a folder — give a file name")
        _check_folder(flag, raw, path.parent if str(path.parent) else Path("."))
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {raw}: the file exists and is not writable — choose "
                              f"another path")
    for flag, raw, path in _given(folders):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{flag} {raw} is a file, not a folder — give a folder")
        _check_folder(flag, raw, path)


def _given(pairs: Iterable[tuple[str, str | os.PathLike[str] | None]]
           ) -> Iterator[tuple[str, str | os.PathLike[str], Path]]:
    """The ``(flag, path)`` pairs that name a path, with the path (``~`` expanded)."""
    for flag, raw in pairs:
        if raw is not None and raw != "":
            yield flag, raw, Path(raw).expanduser()


def _check_folder(flag: str, raw: str | os.PathLike[str], folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {raw}: cannot create the folder {folder} "
                          f"({exc.strerror or exc}) — choose a writable path") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {raw}: the folder {folder} is not writable — choose a "
                          f"writable path")


def fallback_path(path: str | os.PathLike[str]) -> Path:
    """Where a file that could not be written goes instead: the temporary folder, with a
    time stamp and the process id so that nothing is overwritten."""
    name = Path(path).name or "output"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"parallel-kit-{stamp}-{os.getpid()}-{name}"


def write_or_rescue(path: str | os.PathLike[str], write: Callable[[Path], Path],
                    *, say: Callable[[str], None] | None = None) -> Path:
    """``write(path)``; if it raises ``OSError``, ``write(fallback_path(path))`` and say so.

    Raises:
        OSError: the fallback could not be written either (both reasons in the message).
    """
    tell = say or (lambda msg: print(msg, file=sys.stderr))
    try:
        return write(Path(path))
    except OSError as first:
        rescue = fallback_path(path)
        try:
            written = write(rescue)
        except OSError as second:
            raise OSError(f"could not write {path} ({first.strerror or first}) nor the "
                          f"fallback {rescue} ({second.strerror or second})") from None
        tell(f"could not write {path} ({first.strerror or first}); wrote {written} instead")
        return written
