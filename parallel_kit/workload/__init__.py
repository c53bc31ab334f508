"""What is sent: prompts and request specs, and arrival schedules over time."""

__all__: list[str] = []
