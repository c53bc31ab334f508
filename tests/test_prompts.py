import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.prompts import load_prompts, make_specs, original_prompts


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
