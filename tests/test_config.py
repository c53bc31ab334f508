import pytest

from parallel_kit.config import (
    backend_from_env,
    max_concurrent_from_env,
    normalize_host,
    time_scale_from_env,
)
from parallel_kit.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("http://10.0.0.5:11434/", "http://10.0.0.5:11434"),
    ],
)
def test_hosts_are_read_the_way_ollama_reads_ollama_host(raw, url):
    assert normalize_host(raw) == url


def test_bad_scheme_is_refused():
    with pytest.raises(ConfigError, match="scheme"):
        normalize_host("ftp://x")


def test_environment_settings_are_validated(monkeypatch):
    monkeypatch.setenv("PARALLEL_KIT_BACKEND", "cloud")
    with pytest.raises(ConfigError, match="auto, ollama or sim"):
        backend_from_env()
    monkeypatch.setenv("PARALLEL_KIT_TIME_SCALE", "-1")
    with pytest.raises(ConfigError, match="positive"):
        time_scale_from_env()
    monkeypatch.setenv("PARALLEL_KIT_TIME_SCALE", "0.05")
    assert time_scale_from_env() == 0.05
    monkeypatch.setenv("MAX_CONCURRENT_REQUESTS", "two")
    with pytest.raises(ConfigError, match="MAX_CONCURRENT_REQUESTS"):
        max_concurrent_from_env()
    monkeypatch.delenv("MAX_CONCURRENT_REQUESTS")
    assert max_concurrent_from_env() == 5
