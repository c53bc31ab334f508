"""Measuring a server: the probe (speed, slots, S(k)) and calibration of simulator profiles."""

__all__: list[str] = []
