"""Test-wide hygiene: no real Ollama is assumed, Ray sees logical GPUs only."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

# Ray refuses logical GPUs while CUDA_VISIBLE_DEVICES is set, and must not phone home.
os.environ.pop("CUDA_VISIBLE_DEVICES", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Tests never talk to a user's Ollama by accident.
os.environ.setdefault("PARALLEL_KIT_BACKEND", "sim")
