"""JSONL manifests: parsing, path resolution, and errors that name the file, line and key."""

import json
from pathlib import Path

import pytest

from vtok_lit.data.manifest import ManifestError, QAPair, read_manifest, write_manifest


def test_round_trip_resolves_paths_and_keeps_extra_keys(tmp_path: Path) -> None:
    lines = [
        {
            "video": "clips/000.mp4",
            "caption": "a red circle moves left",
            "qa": [{"question": "Which way?", "answer": "left", "category": "direction"}],
            "split": "val",
            "objects": [{"shape": "circle"}],
        },
        {"video": "/elsewhere/001.mp4", "caption": "nothing moves", "qa": [{"question": "Q", "answer": "A"}]},
    ]
    manifest = tmp_path / "sub" / "manifest.jsonl"
    manifest.parent.mkdir()
    write_manifest(manifest, lines)
    first, second = read_manifest(manifest)
    assert first.video == manifest.parent / "clips/000.mp4"
    assert first.caption == "a red circle moves left"
    assert first.qa == [QAPair("Which way?", "left", "direction")]
    assert (first.split, first.line, first.manifest) == ("val", 1, manifest)
    assert first.meta == {"objects": [{"shape": "circle"}]}
    assert second.video == Path("/elsewhere/001.mp4")
    assert second.split == "train" and second.meta == {}
    assert second.qa == [QAPair("Q", "A", None)]
    assert second.location == f"{manifest} line 2"


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('\n{"video": "a.mp4", "caption": "c"}\n\n{"video": "b.mp4", "caption": "d"}\n')
    assert [record.line for record in read_manifest(manifest)] == [2, 4]


def test_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found: .*nowhere.jsonl"):
        read_manifest(tmp_path / "nowhere.jsonl")


GOOD_LINE = {"video": "a.mp4", "caption": "a caption"}
MC = {"question": "What does he do?", "options": ["sits", "runs"], "answer": "B"}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"caption": "c"}), "missing key 'video'"),
        (json.dumps({"video": ""}), "key 'video' is empty"),
        (json.dumps({"video": 3, "caption": "c"}), "key 'video' must be a string, got 3"),
        (json.dumps({"video": "a.mp4"}), "missing key 'caption'"),
        (json.dumps({**GOOD_LINE, "caption": ["c"]}), r"key 'caption' must be a string, got \['c'\]"),
        (json.dumps({**GOOD_LINE, "split": 1}), "key 'split' must be a string, got 1"),
        (json.dumps({**GOOD_LINE, "qa": {"question": "q"}}), "key 'qa' must be a list"),
        (json.dumps({**GOOD_LINE, "qa": ["q"]}), r"qa\[0\]: expected an object"),
        (json.dumps({**GOOD_LINE, "qa": [{"question": "q"}]}), r"qa\[0\]: missing key 'answer'"),
        (json.dumps({**GOOD_LINE, "qa": [{"question": "q", "answer": 1}]}), r"qa\[0\]: key 'answer' must be"),
        (json.dumps({**GOOD_LINE, "qa": [{"question": "q", "answer": "a", "category": 2}]}), "'category'"),
        (json.dumps({**GOOD_LINE, "start": "1s"}), "key 'start' must be a non-negative number of seconds"),
        (json.dumps({**GOOD_LINE, "end": -2}), "key 'end' must be a non-negative number"),
        (json.dumps({**GOOD_LINE, "start": True}), "key 'start' must be a non-negative number"),
        (json.dumps({**GOOD_LINE, "start": 3, "end": 2.5}), "segment end 2.5 must be after start 3"),
        (json.dumps({**GOOD_LINE, "qa": [{**MC, "options": "a, b"}]}), "'options' must be a list of strings"),
        (
            json.dumps({**GOOD_LINE, "qa": [{**MC, "options": ["a"]}]}),
            "'options' needs 2 to 26 options, got 1",
        ),
        (json.dumps({**GOOD_LINE, "qa": [{**MC, "options": ["a", "a"]}]}), "repeats an option"),
        (
            json.dumps({**GOOD_LINE, "qa": [{**MC, "answer": "C"}]}),
            "answer 'C' is neither one of the options .* nor a letter A-B",
        ),
    ],
)
def test_bad_line_names_the_manifest_the_line_and_the_key(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(json.dumps(GOOD_LINE) + "\n" + bad_line + "\n")
    with pytest.raises(ManifestError, match=rf"bad\.jsonl line 2: .*{message}"):
        read_manifest(manifest)


def test_segments_and_multiple_choice_are_parsed(tmp_path: Path) -> None:
    lines = [
        {**GOOD_LINE, "start": 1, "end": 2.5, "qa": [MC, {**MC, "answer": "sits", "category": "action"}]},
        {**GOOD_LINE, "start": 4},
    ]
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, lines)
    first, second = read_manifest(manifest)
    assert (first.start, first.end, second.start, second.end) == (1.0, 2.5, 4.0, None)
    assert first.meta == {} and first.qa[0].options == ("sits", "runs")
    assert [pair.answer_index for pair in first.qa] == [1, 0]
    assert QAPair("q", "a").answer_index is None


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(b'{"video": "a.mp4", "caption": "ok"}\n{"video": "b.mp4", "caption": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match=rf"{manifest} line 2: not UTF-8 text \(byte 0xe9 at column 35\)"):
        read_manifest(manifest)
