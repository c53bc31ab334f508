"""The mode registry and the typed options: each mode described once, mistakes fail at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parallel_kit as pk
from parallel_kit import theory
from parallel_kit.bench import compare
from parallel_kit.clients import OllamaClient, OpenAIClient
from parallel_kit.clients.factory import make_client
from parallel_kit.config import Endpoint
from parallel_kit.errors import ConfigError
from parallel_kit.modes import registry
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.options import QueueOptions, RayOptions, ServerOptions
from parallel_kit.modes.registry import ModeInfo, get_info, parse_modes, register_mode
from parallel_kit.topology import Topology


def test_every_builtin_mode_is_registered_with_a_runner_that_imports() -> None:
    assert registry.MODE_NAMES == ("sequential", "async", "batch", "pool", "ray", "rayserve",
                                   "production")
    for info in registry.modes():
        assert callable(info.load()), info.name
        assert info.description


def test_traits_say_what_used_to_be_string_comparisons() -> None:
    assert [m.name for m in registry.modes() if m.multi_server] == ["pool", "ray", "rayserve",
                                                                    "production"]
    assert [m.name for m in registry.modes() if m.uses_task_queue] == ["async", "batch"]
    assert [m.name for m in registry.modes() if m.starts_own_servers] == [
        "ray", "rayserve", "production"]
    assert [m.name for m in registry.modes() if m.serves_api] == ["async", "pool", "ray",
                                                                  "production"]


@pytest.fixture
def extra_mode() -> Iterator[ModeInfo]:
    info = register_mode(ModeInfo("two_lanes", "sequential under another name (a test mode)",
                                  "parallel_kit.modes.sequential:run_sequential",
                                  multi_server=True, in_flight="slots"))
    try:
        yield info
    finally:
        registry._REGISTRY.pop(info.name)


def test_a_registered_mode_is_known_to_parsing_theory_and_the_cli(extra_mode: ModeInfo) -> None:
    assert parse_modes("sequential,two_lanes") == ["sequential", "two_lanes"]
    assert theory.predict("two_lanes", [10.0] * 5, workers=3).makespan_s == 20.0
    from parallel_kit.cli import build_parser

    assert "two_lanes" in build_parser().format_help()


def test_registering_a_different_mode_under_a_taken_name_fails() -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        register_mode(ModeInfo("pool", "another pool", "x.y:z"))


@pytest.mark.parametrize("bad", [{"name": "two words"}, {"runner": "no_colon"},
                                 {"in_flight": "many"}])
def test_a_malformed_mode_record_is_refused(bad: dict[str, str]) -> None:
    fields = {"name": "ok", "description": "d", "runner": "m:f", **bad}
    with pytest.raises(ConfigError):
        ModeInfo(**fields)  # type: ignore[arg-type]


def test_theory_predicts_from_a_topology_as_from_the_mode_name() -> None:
    times = [10.0] * 5
    for name in registry.MODE_NAMES:
        topo = get_info(name).topology(gpus=3, slots=2, concurrency=2)
        by_name = theory.predict(name, times, workers=3, slots=2, concurrency=2)
        assert theory.predict(topo, times).makespan_s == by_name.makespan_s
    assert theory.predict(Topology(servers=3), times).makespan_s == 20.0
    assert theory.predict(Topology(servers=1, in_flight=1), times).makespan_s == 50.0
    with pytest.raises(ConfigError, match="from the Topology"):
        theory.predict(Topology(), times, workers=3)


def test_mode_context_has_no_string_keyed_options() -> None:
    with pytest.raises(TypeError):
        ModeContext([Endpoint("http://127.0.0.1:9")], options={"ray_launch": "sim"})  # type: ignore[call-arg]
    ctx = ModeContext([], servers=ServerOptions(launch="sim"))
    assert ctx.concurrency == QueueOptions().concurrency


@pytest.mark.parametrize("build", [
    lambda: QueueOptions(concurency=3),  # type: ignore[call-arg]
    lambda: ServerOptions(lauch="sim"),  # type: ignore[call-arg]
    lambda: RayOptions(adress="x"),  # type: ignore[call-arg]
])
def test_a_mistyped_option_fails_when_it_is_built(build) -> None:
    with pytest.raises(TypeError):
        build()


@pytest.mark.parametrize(("build", "match"), [
    (lambda: QueueOptions(concurrency=0), "--concurrency"),
    (lambda: QueueOptions(prefetch=-1), "prefetch"),
    (lambda: ServerOptions(count=0), "--gpus"),
    (lambda: ServerOptions(launch="docker"), "auto, ollama, sim"),  # type: ignore[arg-type]
    (lambda: ModeContext([]), "at least one endpoint"),
])
def test_a_bad_option_value_names_the_fix(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        QueueOptions().concurrency = 3  # type: ignore[misc]


def test_compare_refuses_an_unknown_keyword_naming_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"'gpu'.*gpus"):
        asyncio.run(compare(["sequential"], gpu=3))  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="give one"):
        asyncio.run(compare(["sequential"], queue=QueueOptions(), concurrency=2))


@pytest.mark.parametrize(("api", "cls"), [("generate", OllamaClient), ("chat", OllamaClient),
                                          ("openai", OpenAIClient)])
def test_one_client_factory_by_api(api: str, cls: type) -> None:
    client = make_client(api, "127.0.0.1:9", max_connections=2)
    assert isinstance(client, cls)
    if isinstance(client, OllamaClient):
        assert client.api == api


def test_an_unknown_api_names_the_three() -> None:
    with pytest.raises(ConfigError, match="generate, chat, openai"):
        make_client("grpc", "127.0.0.1:9")


def test_the_public_api_exports_the_registry_and_the_records() -> None:
    assert pk.register_mode is register_mode and pk.Topology is Topology
    assert pk.mode_names() == registry.MODE_NAMES


@given(times=st.lists(st.floats(0.0, 100.0), max_size=12),
       gpus=st.integers(1, 5), slots=st.integers(1, 4),
       concurrency=st.none() | st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_every_mode_predicts_through_its_topology(times: list[float], gpus: int, slots: int,
                                                  concurrency: int | None) -> None:
    for info in registry.modes():
        topo = info.topology(gpus=gpus, slots=slots, concurrency=concurrency)
        assert 1 <= topo.busy_slots <= slots
        assert topo.servers == (gpus if info.multi_server else 1)
        by_name = theory.predict(info.name, times, servers=gpus, slots=slots,
                                 concurrency=concurrency)
        by_topology = theory.predict(topo, times)
        assert by_name.makespan_s == by_topology.makespan_s
        # No schedule beats the bound, and one request at a time is never faster than Σt ÷ servers.
        # (theory's event simulation finishes work within 1e-9 of the largest service time)
        eps = 1e-9 * max([1.0, *times]) * max(1, len(times))
        assert by_topology.makespan_s >= by_topology.lower_bound_s - eps
        if info.in_flight == "one":
            assert by_topology.makespan_s == pytest.approx(sum(times))
