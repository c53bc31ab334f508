"""What is sent: prompts and request specs, and arrival schedules over time."""
