"""Operating-system helpers under every server and client: sockets, connect-error wording, child processes."""
