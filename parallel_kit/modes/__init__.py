"""Execution modes: sequential, async (queued), batch, pool, ray. See ``modes.base``."""

from .base import MODE_NAMES, ModeContext, get_mode, parse_modes

__all__ = ["MODE_NAMES", "ModeContext", "get_mode", "parse_modes"]
