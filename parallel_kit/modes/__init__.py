"""Execution modes: sequential, async (queued), batch, pool, ray — each registered once in
:mod:`parallel_kit.modes.registry`; the context they run in is :mod:`parallel_kit.modes.base`."""

from .base import ModeContext
from .options import QueueOptions, RayOptions, ServerOptions
from .registry import (
    MODE_NAMES,
    ModeInfo,
    get_info,
    get_mode,
    mode_names,
    modes,
    parse_modes,
    register_mode,
)

__all__ = ["MODE_NAMES", "ModeContext", "ModeInfo", "QueueOptions", "RayOptions",
           "ServerOptions", "get_info", "get_mode", "mode_names", "modes", "parse_modes",
           "register_mode"]
