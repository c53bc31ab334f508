"""Operating-system helpers under every server and client: sockets, connect-error wording, child processes."""

__all__: list[str] = []
