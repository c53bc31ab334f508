"""The command line: expected errors are one line and a non-zero exit, never a traceback."""

import json
import socket
import subprocess
import sys

import pytest

from parallel_kit.cli import main


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_no_ollama_at_the_address_is_one_line_naming_it(capsys):
    url = _closed_port_url()
    assert main(["bench", "--mode", "sequential", "--host", url, "--n", "1"]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: no Ollama answers at") and url in line


def test_unknown_model_names_the_model(capsys, simulated_ollama):
    code = main(["bench", "--mode", "sequential", "--host", simulated_ollama.url,
                 "--model", "nope:1b", "--n", "1"])
    assert code == 2
    assert "model 'nope:1b' not found" in _error_line(capsys)


def test_empty_prompt_file_is_refused(capsys, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    assert main(["bench", "--mode", "sequential", "--prompts", str(f)]) == 2
    assert "no prompts" in _error_line(capsys)


def test_malformed_jsonl_names_the_line(capsys, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": }\n')
    assert main(["bench", "--mode", "sequential", "--prompts", str(f)]) == 2
    assert "line 3" in _error_line(capsys)


@pytest.mark.parametrize("n", ["0", "-2"])
def test_zero_or_negative_n_is_refused(capsys, n):
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage, then one error line
        main(["bench", "--mode", "sequential", f"--n={n}"])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert "--n" in line and "1..100000" in line


def test_unknown_profile_lists_the_known_ones(capsys):
    assert main(["bench", "--mode", "sequential", "--profile", "no-such", "--n", "1",
                 "--time-scale", "0.01"]) == 2
    line = _error_line(capsys)
    assert "no-such" in line and "seed" in line


def test_unknown_mode_is_refused(capsys):
    assert main(["bench", "--mode", "sequential,warp"]) == 2
    assert "unknown mode 'warp'" in _error_line(capsys)


def test_bench_writes_json_and_csv_in_the_contract_schema(tmp_path, capsys):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(["bench", "--mode", "sequential,batch", "--n", "3", "--time-scale", "0.01",
                 "--json", str(out_json), "--csv", str(out_csv), "--no-progress"])
    assert code == 0
    doc = json.loads(out_json.read_text())
    assert [r["summary"]["mode"] for r in doc["runs"]] == ["sequential", "batch"]
    assert all(len(r["requests"]) == 3 for r in doc["runs"])
    assert doc["runs"][0]["summary"]["predicted_makespan_s"] == pytest.approx(30.0)
    assert len(out_csv.read_text().strip().splitlines()) == 1 + 6
    assert "predicted" in capsys.readouterr().out


def test_python_dash_m_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "parallel_kit", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("demo", "bench", "sim", "serve", "probe"):
        assert command in proc.stdout


def test_probe_saves_a_profile_that_the_simulator_then_uses(tmp_path, monkeypatch, capsys):
    profiles = tmp_path / "profiles.json"
    monkeypatch.setenv("PARALLEL_KIT_PROFILES", str(profiles))
    assert main(["probe", "--time-scale", "0.02", "--max-k", "2", "--num-predict", "20",
                 "--save-profile", "my-box", "--json", str(tmp_path / "probe.json")]) == 0
    doc = json.loads(profiles.read_text())
    assert "my-box" in doc["profiles"]
    probe = json.loads((tmp_path / "probe.json").read_text())
    for key in ("effective_slots", "decode_tokens_per_s", "prefill_tokens_per_s", "load_s",
                "ttft_s"):
        assert key in probe
    capsys.readouterr()
    assert main(["bench", "--mode", "sequential", "--n", "1", "--profile", "my-box",
                 "--time-scale", "0.01", "--no-progress"]) == 0
