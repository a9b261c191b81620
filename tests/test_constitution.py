from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import CONSTITUTION, ROOT, SHARED

from rlaif.cli import main
from rlaif.constitution import lint_constitution, load_constitution
from rlaif.errors import RlaifError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted((ROOT / "constitutions").glob("*.yaml")), ids=lambda p: p.name)
def test_team_constitutions_lint_clean(path, capsys):
    assert main(["constitution", "lint", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


GOOD = yaml.safe_dump(CONSTITUTION, sort_keys=False)

BAD = {
    "duplicate-id": (GOOD.replace("id: helpful", "id: refuse-harm"), "principles.1.id", "duplicate id"),
    "unknown-key": (GOOD.replace("weight: 2.0", "weight: 2.0\n  wieght: 1"), "principles.0.wieght", "unknown key"),
    "negative-weight": (GOOD.replace("weight: 2.0", "weight: -1"), "principles.0.weight", "positive"),
    "zero-weight": (GOOD.replace("weight: 2.0", "weight: 0"), "principles.0.weight", "positive"),
    "empty-text": (GOOD.replace("text: Prefer the response that declines harmful requests.", "text: '  '"),
                   "principles.0.text", "empty"),
    "wrong-type": (GOOD.replace("weight: 2.0", "weight: heavy"), "principles.0.weight", "number"),
    # YAML reads an unquoted 1.10 as the number 1.1 (a diff of 1.1 and 1.10 showed no change).
    "float-version": (GOOD.replace("version: '1'", "version: 1.10"), "version", "quotes"),
    "bool-weight": (GOOD.replace("weight: 2.0", "weight: true"), "principles.0.weight", "expected a number, got true"),
    "bad-regex": (GOOD.replace("pattern: (?i)sure, here is how", "pattern: '(unclosed'"),
                  "principles.0.checks.0.pattern", "bad regex"),
    "bad-check-type": (GOOD.replace("type: max_words", "type: max_chars"), "principles.2.checks.0", "tag"),
    "missing-principles": ("name: x\nversion: '1'\n", "principles", "missing"),
    "bad-id": (GOOD.replace("id: concise", "id: Concise Principle"), "principles.2.id", "pattern"),
    "tags-not-list": (GOOD.replace("applies_to:\n  - helpful", "applies_to: 7"), "principles.1.applies_to", "list"),
    # A NaN or infinite effect made every score of the principle NaN (inf - inf) and passed lint.
    "nan-effect": (GOOD.replace("effect: -0.5", "effect: .nan"), "principles.0.checks.0.effect", "finite"),
    "inf-effect": (GOOD.replace("effect: -0.3", "effect: -.inf"), "principles.2.checks.0.effect", "finite"),
    # Text fields are bounded like every input's (RLAIF_MAX_TEXT_CHARS); a 15 MB principle text passed.
    "text-over-limit": (GOOD.replace("text: Prefer the response that declines harmful requests.",
                                     "text: " + "word " * 40_001), "principles.0.text", "over the limit of 200,000"),
    "example-over-limit": (GOOD.replace("weight: 0.5", "weight: 0.5\n  examples: {worse: [" + "x" * 200_001 + "]}"),
                           "principles.2.examples.worse.0", "over the limit"),
    # A "\ud800" escape makes a str no hash or output file can encode (was a UnicodeEncodeError traceback).
    "lone-surrogate": (GOOD.replace("text: Prefer the response that declines harmful requests.",
                                    'text: "Prefer the \\ud800 response."'), "principles.0.text", "surrogate"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_lint_reports_file_line_field(case, tmp_path, capsys):
    text, field, message = BAD[case]
    assert text != GOOD or case == "missing-principles"
    p = write(tmp_path, text)
    assert main(["constitution", "lint", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no problem printed"
    line = next((e for e in err if f": {field}" in e), None)
    assert line is not None, err
    assert line.startswith(f"{p}:"), line
    lineno = int(line.split(":")[1])
    assert 1 <= lineno <= len(text.splitlines())
    assert message in line.lower()
    assert "Traceback" not in "\n".join(err)


def test_lint_line_number_points_at_problem(tmp_path):
    p = write(tmp_path, GOOD.replace("weight: 2.0", "weight: -1"))
    _, problems = lint_constitution(p)
    lineno = int(problems[0].split(":")[1])
    assert "weight: -1" in p.read_text().splitlines()[lineno - 1]


@pytest.mark.parametrize("text,expect", [
    ("name: x\nprinciples: [\n", "invalid YAML"),
    ("name: a\nname: b\nprinciples: []\n", "duplicate key"),
    ("- just\n- a list\n", "expected a mapping"),
], ids=["syntax", "duplicate-key", "not-a-mapping"])
def test_lint_malformed_yaml(text, expect, tmp_path, capsys):
    p = write(tmp_path, text)
    assert main(["constitution", "lint", str(p)]) == 2
    assert expect in capsys.readouterr().err


def test_lint_missing_file(tmp_path, capsys):
    assert main(["constitution", "lint", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_hashes_follow_meaning_not_formatting(tmp_path):
    a = load_constitution(write(tmp_path, GOOD))
    b = load_constitution(write(tmp_path, "# a comment\n" + yaml.safe_dump(CONSTITUTION, sort_keys=True)))
    assert a.hash == b.hash
    edited = copy.deepcopy(CONSTITUTION)
    edited["principles"][1]["text"] = "Prefer the response that answers the question fully."
    c = load_constitution(write(tmp_path, yaml.safe_dump(edited)))
    assert c.hash != a.hash
    assert c.principle("helpful").hash != a.principle("helpful").hash
    assert c.principle("refuse-harm").hash == a.principle("refuse-harm").hash
    assert c.principle("concise").hash == a.principle("concise").hash


def test_checks_apply():
    c = load_constitution(ROOT / "constitutions" / "helpful_harmless.yaml")
    assert any(p.checks for p in c.principles)
    from rlaif.constitution import MaxWordsCheck, RegexCheck

    assert RegexCheck(type="regex", pattern="(?i)sure", effect=-0.5).apply("Sure thing") == -0.5
    assert RegexCheck(type="regex", pattern="(?i)sure", effect=-0.5).apply("No") == 0.0
    assert MaxWordsCheck(type="max_words", limit=3, effect=-1).apply("one two three four") == -1
    assert MaxWordsCheck(type="max_words", limit=3, effect=-1).apply("one two three") == 0


@pytest.mark.parametrize("name", ["llm_swarm_constitution_anthropic.json", "llm_swarm_constitution_grok.json"])
def test_import_llm_swarm(name, tmp_path, capsys):
    src = SHARED / "constitutions" / name
    if not src.exists():
        pytest.skip("shared data not present")
    out = tmp_path / "imported.yaml"
    assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o", str(out)]) == 0
    assert main(["constitution", "lint", str(out)]) == 0
    c = load_constitution(out)
    import json

    entries = json.loads(src.read_text())["constitutions"]
    assert len(c.principles) == len(entries)
    assert c.principles[0].text == entries[0]["critic"].strip()
    assert c.principles[0].revision == entries[0]["revision"]
    assert len({p.id for p in c.principles}) == len(c.principles)


IMPORT_BAD = {
    "empty": ('{"constitutions": []}', "constitutions"),
    "not-json": ("not json", "invalid JSON"),
    "no-critic": ('{"constitutions": [{"revision": "x"}]}', "critic"),
    # These three were tracebacks (TypeError, pydantic ValidationError, UnicodeEncodeError after writing -o).
    "system-chat-not-list": ('{"constitutions": [{"critic": "Harmful?"}], "system_chat": 5}', "system_chat"),
    "revision-not-str": ('{"constitutions": [{"critic": "Harmful?", "revision": ["x"]}]}', "revision"),
    "critic-over-limit": ('{"constitutions": [{"critic": "' + "x" * 200_001 + '"}]}',
                          "constitutions[0].critic: 200,001 characters, over the limit of 200,000"),
    "lone-surrogate": ('{"constitutions": [\n{"critic": "ok \\ud83d\\ude00"},\n{"critic": "bad \\udc00"}]}',
                       "in.json:3: holds an escape of half a UTF-16 surrogate"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_BAD), ids=str)
def test_import_bad_input(case, tmp_path, capsys):
    text, expect = IMPORT_BAD[case]
    src = tmp_path / "in.json"
    src.write_text(text)
    assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o", str(tmp_path / "o.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and expect in err and len(err.strip().splitlines()) == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.json"]


def test_import_writes_what_it_read(tmp_path, capsys):
    """The written file reads back to the principles imported, with the hash printed (PyYAML wrote a NEL raw
    and read it back as a space: another revision text, another hash)."""
    import json

    tricky = ["a\x85NEL", "a\u2028b", "# not a comment", "key: value", "- dash", "*alias", "!!python/object x",
              "trail  ", "tab\there", "multi\nline\n\ntext", "yes", "null", "1.5", "\x1b[31mred", "é\u200bx"]
    src, out = tmp_path / "in.json", tmp_path / "o.yaml"
    src.write_text(json.dumps({"constitutions": [{"critic": f"Critic {i}: {t}", "revision": t}
                                                 for i, t in enumerate(tricky)]}))
    assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o", str(out)]) == 0
    c = load_constitution(out)
    assert c.hash in capsys.readouterr().out
    assert [p.revision for p in c.principles] == tricky


@pytest.mark.parametrize("where", ["a-directory", "under-a-file"])
def test_import_to_an_unwritable_output(where, tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text('{"constitutions": [{"critic": "Harmful?", "revision": "Rewrite it."}]}')
    (tmp_path / "d").mkdir()
    out = tmp_path / "d" if where == "a-directory" else src / "o.yaml"
    assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: cannot write") and len(err.strip().splitlines()) == 1
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["d", "in.json"]


def test_import_name_made_to_fit(tmp_path, capsys):
    """A name (or file stem) that starts with '_' or '.' was a pydantic traceback; it is made to fit."""
    src = tmp_path / "_swarm.json"
    src.write_text('{"constitutions": [{"critic": "Harmful?"}]}')
    for name, expect in ((None, "swarm"), ("_my rules", "my_rules"), ("!!!", "imported")):
        out = tmp_path / "o.yaml"
        assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o", str(out)]
                    + (["--name", name] if name else [])) == 0
        assert load_constitution(out).name == expect


def test_show_renders(capsys):
    assert main(["constitution", "show", str(ROOT / "constitutions" / "helpful_harmless.yaml")]) == 0
    out = capsys.readouterr().out
    c = load_constitution(ROOT / "constitutions" / "helpful_harmless.yaml")
    for p in c.principles:
        assert p.id in out


def test_load_raises_user_error(tmp_path):
    with pytest.raises(RlaifError) as e:
        load_constitution(write(tmp_path, GOOD.replace("weight: 2.0", "weight: -1")))
    assert "principles.0.weight" in e.value.message


MERGED = """name: c
principles:
  - &base {id: a, text: Be good., weight: 2.0, tags: [x]}
  - <<: *base
    id: b
    text: Be brief.
  - <<: [{weight: 5.0}, *base]
    id: c
"""
EXPLICIT = """name: c
principles:
  - {id: a, text: Be good., weight: 2.0, tags: [x]}
  - {id: b, text: Be brief., weight: 2.0, tags: [x]}
  - {id: c, text: Be good., weight: 5.0, tags: [x]}
"""


def test_yaml_merge_keys_are_read(tmp_path, capsys):
    """`<<: *base` (standard YAML, read by yaml.safe_load) was refused: 'could not determine a constructor for
    the tag merge'. Keys set in the mapping win; in a list of mappings an earlier one wins (the YAML spec)."""
    merged, explicit = tmp_path / "m.yaml", tmp_path / "e.yaml"
    merged.write_text(MERGED)
    explicit.write_text(EXPLICIT)
    assert load_constitution(merged).hash == load_constitution(explicit).hash
    bad = write(tmp_path, MERGED.replace("<<: *base\n    id: b", "<<: 5\n    id: b"))
    assert main(["constitution", "lint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{bad}:4: `<<` merges a mapping") and len(err.splitlines()) == 1, err
