import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.workload.prompts import load_prompts, make_specs, original_prompts


def test_original_set_has_the_five_workshop_prompts():
    prompts = original_prompts()
    assert len(prompts) == 5
    assert prompts[0].prompt == "What is Python?"


def test_jsonl_fields_are_read(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "num_predict": 7, "model": "m", "options": {"seed": 1}}\n\n'
                 '{"prompt": "b"}\n')
    specs = load_prompts(f)
    assert [s.prompt for s in specs] == ["a", "b"]
    assert specs[0].ollama_options() == {"seed": 1, "num_predict": 7}
    assert [s.request_id for s in specs] == ["r0", "r1"]


def test_txt_is_one_prompt_a_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("one\n\n two \n")
    assert [s.prompt for s in load_prompts(f)] == ["one", "two"]


def test_malformed_jsonl_line_is_named(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    with pytest.raises(ConfigError, match="line 2"):
        load_prompts(f)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_prompt_file_is_an_error(tmp_path, content):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(ConfigError, match="no prompts"):
        load_prompts(f)


def test_missing_file_and_bad_field_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "num_predict": -3}\n')
    with pytest.raises(ConfigError, match="num_predict"):
        load_prompts(f)


@pytest.mark.parametrize("n", [0, -1])
def test_zero_or_negative_n_is_refused(n):
    with pytest.raises(ConfigError, match="--n"):
        make_specs(n)


def test_make_specs_cycles_and_fills_defaults():
    specs = make_specs(7, model="m", num_predict=5)
    assert len(specs) == 7 and specs[5].prompt == specs[0].prompt
    assert all(s.model == "m" and s.num_predict == 5 for s in specs)
    assert len({s.request_id for s in specs}) == 7


# -- files as people save them ------------------------------------------------------------------
def test_a_byte_order_mark_is_dropped_in_jsonl_and_txt(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_bytes("\ufeff".encode() + b'{"prompt": "a"}\n{"prompt": "b"}\n')
    t = tmp_path / "p.txt"
    t.write_bytes("\ufeff".encode() + b"first\nsecond\n")
    assert [s.prompt for s in load_prompts(j)] == ["a", "b"]
    assert [s.prompt for s in load_prompts(t)] == ["first", "second"]


@pytest.mark.parametrize(("line", "match"), [
    ('{"prompt": "a", "options": {"temperature": "hot"}}', 'line 2: option "temperature"'),
    ('{"prompt": "a", "options": {"num_ctx": "big"}}', 'line 2: option "num_ctx"'),
    ('{"prompt": "a", "options": [1]}', 'line 2: "options" must be an object'),
    ('{"prompt": "a", "system": 5}', 'line 2: "system" must be a string'),
    ('{"prompt": "a", "num_predict": 2.5}', 'line 2: "num_predict" must be a whole number'),
    ('{"num_predict": 5}', 'line 2: "prompt" must be a non-empty string'),
    ('{"prompt": "a", "id": [1]}', 'line 2: "id"'),
])
def test_every_field_is_checked_before_the_run_naming_file_and_line(tmp_path, line, match):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_prompts(f)
    assert "p.jsonl" in str(info.value)


def test_the_jsonl_id_is_kept(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "id": "q-17"}\n{"prompt": "b", "id": 3}\n{"prompt": "c"}\n')
    specs = load_prompts(f)
    assert [s.source_id for s in specs] == ["q-17", "3", None]
    run = make_specs(4, specs)
    assert [s.source_id for s in run] == ["q-17", "3", None, "q-17"]
    assert [s.request_id for s in run] == ["r0", "r1", "r2", "r3"]


SHAREGPT = [
    {"id": "c1", "conversations": [{"from": "human", "value": "Hello?"},
                                   {"from": "gpt", "value": "Hi."},
                                   {"from": "human", "value": "More?"}]},
    {"id": "c2", "conversations": [{"from": "gpt", "value": "no human turn"}]},
    {"id": "c3", "conversations": [{"from": "system", "value": "sys"},
                                   {"from": "user", "value": "Second prompt"}]},
]


def test_sharegpt_json_gives_the_first_human_turn(tmp_path):
    import json

    f = tmp_path / "sharegpt.json"
    f.write_text(json.dumps(SHAREGPT))
    specs = load_prompts(f)
    assert [(s.prompt, s.source_id) for s in specs] == [("Hello?", "c1"), ("Second prompt", "c3")]


def test_sharegpt_jsonl_is_read_too(tmp_path):
    import json

    f = tmp_path / "sharegpt.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in SHAREGPT) + "\n")
    assert [s.prompt for s in load_prompts(f)] == ["Hello?", "Second prompt"]


@pytest.mark.parametrize(("doc", "match"), [
    ('{"conversations": []}', "expected a JSON list"),
    ('[{"prompt": "x"}]', "record 0"),
    ('[{"conversations": "x"}]', "record 0"),
    ('[{"conversations": [{"from": "gpt", "value": "x"}]}]', "no conversation with a human"),
    ("[", "not valid JSON"),
])
def test_bad_sharegpt_files_are_config_errors(tmp_path, doc, match):
    f = tmp_path / "s.json"
    f.write_text(doc)
    with pytest.raises(ConfigError, match=match):
        load_prompts(f)
