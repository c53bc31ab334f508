"""Inference servers the kit starts, finds and stops: backends, Ollama launches, Ray clusters."""

__all__: list[str] = []
