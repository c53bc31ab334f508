"""Generated command lines: every flag of ``bench``, ``sweep`` and ``probe`` over its value space.

Hypothesis draws one to three flags per command line, each value from the flag's space —
numbers of every size and sign, NaN and infinities, blank and odd text (control characters,
lone surrogates), hostile paths (a folder, a file under a file, a name with a NUL byte, files
holding lone surrogates, huge ``prompt_tokens``, 10¹² s gaps, bad JSON) and hostile addresses
(``::::``, duplicates, a refused port) — and runs :func:`parallel_kit.cli.main` in-process on
the embedded simulator at a tiny time scale. Every command line must end with exit 0 or 2,
never a traceback, and an exit 2 with exactly one ``error:`` line.

Flags that size the work (``--n``, ``--gpus``, ``--concurrency``, ``--repeats``, …) draw small
valid values or invalid ones, never a large valid one: a valid 100,000-request run is not an
error to find, only a slow test. Fixed seed; the number of examples is ``EXAMPLES`` per command.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from parallel_kit.cli import build_parser, main

pytestmark = pytest.mark.timeout(900)

#: Generated command lines per command (fixed seed below).
EXAMPLES = 25

#: Flags whose valid values size the run: only small valid values are drawn.
SIZING = {"--n", "--gpus", "--slots", "--concurrency", "--repeats", "--max-k", "--num-predict",
          "--max-concurrency", "--warmup", "--workers", "--worker-concurrency", "--max-ongoing",
          "--threads-per-slot"}
#: Flags left out: they pick what to start (Ray modes, the real engine), not a value to check;
#: ``--mode`` draws from the modes without Ray.
SKIP = {"--help", "--engine", "--gguf", "--ray-address", "--save-profile"}

ODD_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
NUMBERS = st.one_of(
    st.integers(-10**15, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "0", "-1", "1e-300", "1e300", "nan", "inf", "-inf", "0x10",
                     "1_000", "٣", "1e6", "0.5"]))
SMALL = st.one_of(st.integers(1, 2).map(str), st.sampled_from(["0", "-1", "nan", "x", "",
                                                               "1e400", "2.5", "10**9"]))
HOSTS = st.sampled_from(["::::", "http://[::1", "localhost:1", "http://127.0.0.1:1",
                         "ftp://x", " ", "127.0.0.1:99999", "[::1]:11434", "http://a b"])


def _files(tmp: Path) -> list[str]:
    def write(name: str, text: str) -> str:
        p = tmp / name
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        return str(p)

    (tmp / "folder").mkdir(exist_ok=True)
    return [
        write("surrogate.jsonl", '{"prompt": "a \\ud800 b"}\n'),
        write("surrogate_id.jsonl", '{"prompt": "a", "id": "\\udc00"}\n'),
        write("tokens.jsonl", '{"timestamp_s": 0, "prompt_tokens": 1000000000}\n'),
        write("gap.jsonl", '{"timestamp_s": 0, "prompt": "a"}\n'
                           '{"timestamp_s": 1e12, "prompt": "b"}\n'),
        write("bad.jsonl", "{not json\n"),
        write("big_np.jsonl", '{"prompt": "a", "num_predict": 99999999999}\n'),
        write("ok.jsonl", '{"prompt": "hello", "id": 7}\n'),
        write("trace.jsonl", '{"timestamp_s": 0, "prompt": "a", "id": "t1"}\n'
                             '{"timestamp_s": 0.5, "prompt_tokens": 8}\n'),
        write("empty.txt", ""),
        write("weird.xyz", "a"),
        str(tmp / "folder"), str(tmp / "missing.jsonl"), "/dev/null", "a\x00b", "original",
    ]


def _outputs(tmp: Path) -> list[str]:
    (tmp / "file").write_text("x")
    return [str(tmp / "out" / "o.json"), str(tmp / "folder"), str(tmp / "file" / "o.json"),
            "a\x00b.json", str(tmp / "o.png")]


def _value_strategy(flag: str, action: argparse.Action, tmp: Path) -> st.SearchStrategy[str]:
    if flag == "--mode":
        return st.one_of(st.sampled_from(["sequential", "async", "batch", "pool",
                                          "sequential,async", "sequential,sequential", "",
                                          "nope", "ray,"]), ODD_TEXT)
    if flag == "--host":
        return HOSTS
    if flag == "--redis":
        return st.sampled_from(["garbage", "redis://:x@[::::]:1/0", "redis://127.0.0.1:1/0",
                                "http://x", ""])
    if flag in ("--prompts", "--trace"):
        return st.sampled_from(_files(tmp))
    if flag in ("--json", "--csv", "--plot"):
        return st.sampled_from(_outputs(tmp))
    if flag in SIZING:
        return SMALL
    if action.choices:
        return st.one_of(st.sampled_from(sorted(map(str, action.choices))), ODD_TEXT)
    if flag in ("--rate", "--rates", "--duration", "--trace-speed", "--burstiness",
                "--time-scale", "--seed"):
        return st.one_of(NUMBERS, st.sampled_from(["auto", "1,2", ",", "1,,2", "0.5,nan"]))
    return st.one_of(ODD_TEXT, NUMBERS)


def _flags(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for action in sub.choices[command]._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and long[0] not in SKIP:
            out[long[0]] = action
    return out


BASE = {
    "bench": ["bench", "--mode", "sequential", "--time-scale", "0.0001", "--no-progress"],
    "sweep": ["sweep", "--mode", "sequential", "--rates", "1,2", "--n", "2",
              "--time-scale", "0.0001"],
    "probe": ["probe", "--time-scale", "0.0001", "--max-k", "1"],
}


def _command_lines(command: str, tmp: Path) -> st.SearchStrategy[list[str]]:
    flags = _flags(command)

    @st.composite
    def lines(draw: st.DrawFn) -> list[str]:
        chosen = draw(st.lists(st.sampled_from(sorted(flags)), min_size=1, max_size=3,
                               unique=True))
        argv = list(BASE[command])
        for flag in chosen:
            action = flags[flag]
            if action.nargs == 0:
                argv.append(flag)
            else:
                argv += [flag, draw(_value_strategy(flag, action, tmp))]
        return argv
    return lines()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, err


def _check(argv: list[str], code: int, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err[-2000:])
    if code == 2:
        errors = [line for line in err.splitlines()
                  if line.startswith("error:") or ": error:" in line]
        assert len(errors) == 1, (argv, err[-2000:])
        assert len(errors[0]) > len("error: ") + 10, (argv, errors)


@pytest.mark.parametrize("command", sorted(BASE))
def test_generated_command_lines_end_in_0_or_one_clear_error(command, tmp_path_factory,
                                                              capsys, monkeypatch) -> None:
    tmp = tmp_path_factory.mktemp(f"gen-{command}")
    # A generated relative output name ("322785") is written where the command runs: there,
    # never in the checkout.
    monkeypatch.chdir(tmp)

    @seed(20261205)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=_command_lines(command, tmp))
    def check(argv: list[str]) -> None:
        code, err = _run(argv, capsys)
        _check(argv, code, err)

    check()


# -- the examples the generated cases grew from, pinned ----------------------------------------------
@pytest.mark.parametrize(("extra", "needle"), [
    (["--host", "::::"], "is not a valid address"),
    (["--host", "localhost", "--host", "http://localhost:11434"], "names the same server"),
    (["--mode", "production", "--redis", "garbage"], "is not a Redis URL"),
    (["--rate", "1000", "--duration", "1000"], "more than 100,000"),
    (["--rate", "1e-9", "--n", "2"], "a week"),
])
def test_pinned_examples_give_one_clear_line(capsys, extra, needle) -> None:
    argv = ["bench", "--mode", "sequential", "--time-scale", "0.0001", "--no-progress", *extra]
    if extra[0] == "--mode":
        argv = ["bench", *extra, "--time-scale", "0.0001", "--no-progress"]
    code, err = _run(argv, capsys)
    _check(argv, code, err)
    assert code == 2 and needle in err


def test_jsonl_id_reaches_every_row(tmp_path, capsys) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "id": "first"}\n{"prompt": "b", "id": 2}\n'
                       '{"prompt": "c"}\n')
    out = tmp_path / "r.json"
    assert main(["bench", "--mode", "sequential,async", "--prompts", str(prompts),
                 "--time-scale", "0.0001", "--no-progress", "--json", str(out)]) == 0
    for run in json.loads(out.read_text())["runs"]:
        assert [r["source_id"] for r in run["requests"]] == ["first", "2", None]


# -- reports that hide nothing ---------------------------------------------------------------------
_FIGURES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none())


@seed(20261205)
@settings(max_examples=200, deadline=None, database=None)
@given(values=st.lists(st.tuples(_FIGURES, _FIGURES, _FIGURES, _FIGURES), min_size=1,
                       max_size=4),
       mode=st.sampled_from(["sequential", "production", "a-long-mode-name"]))
def test_open_loop_table_columns_never_run_together(values, mode) -> None:
    """Any width of figure: every line has one cell per column, split on white space (the
    offered rate and ρ used to print as "100.0000250.00")."""
    from parallel_kit.bench.loadgen import _LOAD_COLUMNS, format_load_table
    from parallel_kit.records import RunResult, RunSummary

    runs = []
    for offered, rho, latency, sent in values:
        s = RunSummary(mode=mode, backend="sim", time_scale=1.0, n=3, ok=3, failed=0,
                       workers=1, slots=1, makespan_s=1.0, wall_s=1.0)
        s.offered_rps = math.nan if offered is None else offered
        s.utilisation = math.nan if rho is None else rho
        s.open_loop = {"latency_from_arrival_mean_s": latency, "sent_rps": sent,
                       "lag_p95_clock_ms": 0.5}
        runs.append(RunResult(s, []))
    lines = format_load_table(runs).splitlines()
    columns = len(_LOAD_COLUMNS) + 2  # and mode, ok/n
    body = [ln for ln in lines[2:-1] if ln.startswith(mode)]
    assert len(body) == len(values)
    assert all(len(ln.split()) == columns for ln in body), lines


def test_the_table_says_when_max_concurrency_held_the_rate_down(capsys) -> None:
    code = main(["bench", "--mode", "async", "--rate", "1000", "--n", "6",
                 "--max-concurrency", "1", "--time-scale", "0.0001", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--max-concurrency 1 bound" in out and "offered/s" in out and "sent/s" in out


class _App:
    replicas: ClassVar[list[dict[str, object]]] = [{"replica": "abc123", "rank": 0, "actor_id": "ff01", "url": "http://h:1"},
                {"replica": "def456", "rank": 1, "actor_id": "ff02", "url": "http://h:2"}]


class _Died(RuntimeError):
    def __init__(self, actor_id: str) -> None:
        super().__init__("The actor died unexpectedly before finishing this task.")
        self.actor_id = actor_id


@pytest.mark.parametrize(("exc", "replica", "cause"), [
    (RuntimeError("ray::ServeReplica.handle_request() (pid=1)\n  replica def456 (gpu1): its "
                  "Ollama stopped answering — connection refused"), "def456",
     "stopped answering"),
    (_Died("ff01"), "abc123", "died unexpectedly"),
])
def test_a_lost_replica_is_named_with_its_cause(exc, replica, cause) -> None:
    from parallel_kit.modes.rayserve import _lost_replica

    lost = _lost_replica(_App(), exc)  # type: ignore[arg-type]
    assert lost["worker"] == f"replica {replica}" and lost["replica"] == replica
    assert cause in lost["reason"]


# -- secrets and the stack's Redis ---------------------------------------------------------------
@seed(20261205)
@settings(max_examples=100, deadline=None, database=None)
@given(password=st.text(alphabet=st.characters(blacklist_characters="@/\x00",
                                               blacklist_categories=("Cs",)), min_size=1,
                        max_size=30))
def test_a_masked_url_never_holds_the_password(password) -> None:
    from parallel_kit.production.redis_server import mask_url

    shown = mask_url(f"redis://:{password}@127.0.0.1:6379/0")
    assert shown == "redis://:***@127.0.0.1:6379/0"


def test_the_kits_redis_has_a_password_and_a_wrong_one_is_called_that() -> None:
    from parallel_kit.errors import ConfigError
    from parallel_kit.production.redis_server import RedisServer, check_redis

    with RedisServer.start() as server:
        assert "***" in server.shown_url and server.url != server.shown_url
        secret = server.url.split(":")[2].split("@")[0]
        check_redis(server.url)
        bad = server.url.replace(secret, "wrong")
        for url in (bad, server.url.replace(f":{secret}@", "")):
            with pytest.raises(ConfigError) as err:
                check_redis(url)
            text = str(err.value)
            assert "refused the password" in text and secret not in text
            assert "\n" not in text
        assert oct(Path(server.workdir, "redis.conf").stat().st_mode & 0o777) == "0o600"


# -- the APIs: text that cannot be encoded, keys ---------------------------------------------------
def _api(key: str | None = None, production: bool = False):  # type: ignore[no-untyped-def]
    from parallel_kit.api import ApiBackend, ApiSettings, create_app
    from parallel_kit.records import RequestResult
    from parallel_kit.timing import ModelClock

    async def backend(spec):  # type: ignore[no-untyped-def]
        return RequestResult(request_id="", mode="async", prompt=spec.prompt, model="m",
                             ok=True, response="ok", finished_s=0.0)

    cfg = ApiSettings(api_key=key)
    if production:
        from parallel_kit.production.api import create_production_app

        return create_production_app(object(), cfg)
    return create_app(ApiBackend(backend, ModelClock(1.0), model="m"), cfg)


_LONE = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")


@seed(20261205)
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(escape=_LONE, field=st.sampled_from(["prompt", "model", "options"]),
       production=st.booleans())
def test_a_lone_surrogate_in_a_body_is_a_422_in_both_apis(escape, field, production) -> None:
    import asyncio

    import httpx

    value = f'"a {escape} b"'
    body = {"prompt": '"hi"', field: value if field != "options" else
            f'{{"stop": [{value}]}}'}
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_api(production=production))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/inference", content=raw.encode(),
                                   headers={"content-type": "application/json"})

    r = asyncio.run(go())
    assert r.status_code == 422, r.text
    assert "lone surrogate" in r.json()["detail"]


@pytest.mark.parametrize("key", ["clé-ü", "abc ", " abc\n", "ключ"])
def test_api_keys_that_are_not_plain_ascii_or_end_in_space_match(key) -> None:
    import asyncio

    import httpx

    async def go() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=_api(key))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            good = await http.get("/no-such-path", headers={
                "authorization": b"Bearer " + key.strip().encode()})
            bad = await http.get("/no-such-path", headers={"authorization": b"Bearer nope"})
            return good.status_code, bad.status_code

    good, bad = asyncio.run(go())
    assert good != 401 and bad == 401


@pytest.mark.parametrize("key", ["a\nb", "a\x00b", "a\x7fb", "a\ud800b"])
def test_an_api_key_a_header_cannot_carry_is_refused_at_start(key) -> None:
    from parallel_kit.api import ApiSettings
    from parallel_kit.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot carry") as err:
        ApiSettings(api_key=key)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", sorted(BASE))
def test_each_base_command_line_runs(command, capsys) -> None:
    """The generated lines add flags to these; they must run, or every case would be an
    error (a sweep's theory curve once tripped the schedule-span bound, making every sweep
    line exit 2)."""
    code, err = _run(list(BASE[command]), capsys)
    assert code == 0, err[-2000:]
