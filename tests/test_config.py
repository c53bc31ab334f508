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


# -- OLLAMA_HOST as envconfig.Host reads it ----------------------------------------------------
# https://github.com/ollama/ollama/blob/main/envconfig/config.go (Var, Host, ConnectableHost)
@pytest.mark.parametrize(("raw", "url"), [
    ('"127.0.0.1:11434"', "http://127.0.0.1:11434"),
    ("'0.0.0.0'", "http://127.0.0.1:11434"),
    ("  '10.1.2.3:8080'  ", "http://10.1.2.3:8080"),
    (":11500", "http://127.0.0.1:11500"),
    ("::1", "http://[::1]:11434"),
    ("[::1]:9000", "http://[::1]:9000"),
    ("[::]", "http://[::1]:11434"),
    ("http://[::1]", "http://[::1]:80"),
    ("https://h:8443/ollama/", "https://h:8443/ollama"),
    ("ollama.com", "https://ollama.com:443"),
    ("localhost:", "http://localhost:11434"),
])
def test_every_form_envconfig_host_accepts(raw, url):
    assert normalize_host(raw) == url


@pytest.mark.parametrize("raw", ["http://[::1", "h:abc", "h:70000", "local host", "[::1]x"])
def test_a_malformed_host_is_one_config_error(raw):
    with pytest.raises(ConfigError, match="host"):
        normalize_host(raw)


def test_a_malformed_ollama_host_names_the_variable(monkeypatch):
    from parallel_kit.config import host_from_env

    monkeypatch.setenv("OLLAMA_HOST", "http://[::1")
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        host_from_env()


def test_sim_listens_where_ollama_host_says(monkeypatch):
    from parallel_kit.sim.settings import listen_address

    monkeypatch.setenv("OLLAMA_HOST", '"0.0.0.0:11500"')
    assert listen_address() == ("0.0.0.0", 11500)
    assert listen_address(port=0) == ("0.0.0.0", 0)
    monkeypatch.setenv("OLLAMA_HOST", "[::]:1234")
    assert listen_address() == ("::", 1234)


# -- durations as Go reads them ----------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), (".5s", 0.5), ("250ms", 0.25),
    ("-1m", -60.0), ("0", 0.0), ("2h45m30.5s", 9930.5), ("100us", 1e-4), ("3\u00b5s", 3e-6),
])
def test_go_durations(text, seconds):
    from parallel_kit.config import parse_go_duration

    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("-1", 'time: missing unit in duration "-1"'),
    ("300", 'time: missing unit in duration "300"'),
    ("", 'time: invalid duration ""'),
    ("abc", 'time: invalid duration "abc"'),
    ("5 minutes", 'time: unknown unit " minutes" in duration "5 minutes"'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
])
def test_go_duration_errors_have_gos_text(text, message):
    from parallel_kit.config import parse_go_duration

    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


# -- the simulator's settings: OLLAMA_* variables, flags override -------------------------------
def _clear(monkeypatch):
    for var in ("OLLAMA_HOST", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_QUEUE", "OLLAMA_KEEP_ALIVE",
                "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_CONTEXT_LENGTH"):
        monkeypatch.delenv(var, raising=False)


def test_settings_default_to_ollamas(monkeypatch):
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    s = sim_settings()
    assert (s.bind, s.port, s.num_parallel, s.max_queue, s.keep_alive_s, s.max_loaded_models,
            s.context_length) == ("127.0.0.1", 11434, None, 512, 300.0, 0, 0)


@pytest.mark.parametrize(("var", "value", "field", "expected"), [
    ("OLLAMA_MAX_QUEUE", "1", "max_queue", 1),
    ("OLLAMA_NUM_PARALLEL", '"4"', "num_parallel", 4),
    ("OLLAMA_NUM_PARALLEL", "0", "num_parallel", None),
    ("OLLAMA_KEEP_ALIVE", "-1", "keep_alive_s", float("inf")),
    ("OLLAMA_KEEP_ALIVE", "24h", "keep_alive_s", 86400.0),
    ("OLLAMA_KEEP_ALIVE", "3600", "keep_alive_s", 3600.0),
    ("OLLAMA_KEEP_ALIVE", "'10m'", "keep_alive_s", 600.0),
    ("OLLAMA_MAX_LOADED_MODELS", "1", "max_loaded_models", 1),
    ("OLLAMA_CONTEXT_LENGTH", "8192", "context_length", 8192),
])
def test_each_variable_the_simulator_honours(monkeypatch, var, value, field, expected):
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    monkeypatch.setenv(var, value)
    assert getattr(sim_settings(), field) == expected


def test_flags_override_variables(monkeypatch):
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "1")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "24h")
    s = sim_settings(max_queue=7, keep_alive="-1")
    assert (s.max_queue, s.keep_alive_s) == (7, float("inf"))
    assert sim_settings(keep_alive="3600").keep_alive_s == 3600.0


@pytest.mark.parametrize(("var", "value"), [
    ("OLLAMA_MAX_QUEUE", "lots"), ("OLLAMA_NUM_PARALLEL", "-2"),
    ("OLLAMA_KEEP_ALIVE", "forever"), ("OLLAMA_MAX_LOADED_MODELS", "1.5"),
])
def test_a_bad_variable_is_a_config_error_naming_it(monkeypatch, var, value):
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        sim_settings()


def test_a_bad_keep_alive_flag_lists_the_forms_that_work(monkeypatch):
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    with pytest.raises(ConfigError, match=r'"5m".*3600.*-1'):
        sim_settings(keep_alive="5 minutes")


def test_the_sim_command_reads_ollama_max_queue(monkeypatch):
    """The issue's example: OLLAMA_MAX_QUEUE=1 parallel-kit sim → /sim/stats says 1."""
    from parallel_kit.cli import build_parser
    from parallel_kit.sim.server import SimulatedOllama
    from parallel_kit.sim.settings import sim_settings

    _clear(monkeypatch)
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "1")
    args = build_parser().parse_args(["sim", "--port", "0"])
    s = sim_settings(max_queue=args.max_queue, keep_alive=args.keep_alive)
    assert s.max_queue == 1
    assert SimulatedOllama("seed").stats()["max_queue"] == 1
