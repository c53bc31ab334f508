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
from pathlib import Path

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
                                                              capsys) -> None:
    tmp = tmp_path_factory.mktemp(f"gen-{command}")

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
