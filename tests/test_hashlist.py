"""Tests for moderation.hashlist: txt / csv / jsonl hash lists, round trips and bad lines."""

from __future__ import annotations

import pytest

from moderation.banks import EntryInput, validate_pdq
from moderation.errors import InvalidInput
from moderation.hashlist import format_from_name, format_lines, parse

H1 = "f" * 64
H2 = "0123456789abcdef" * 4
H3 = "a5" * 32
TRICKY_NOTE = 'from "partner", batch 7, 儿童保护 — 已核实'

ROWS: list[tuple[str, str, int | None, str]] = [
    ("pdq", H1, 100, "plain note"),
    ("pdq", H2, None, TRICKY_NOTE),
    ("pdq", H3, 0, ""),
]


def render(rows: list[tuple[str, str, int | None, str]], fmt: str) -> str:
    return "".join(format_lines(rows, fmt))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_keeps_values_quality_and_notes(fmt: str) -> None:
    text = render(ROWS, fmt)
    parsed = parse(text, fmt, validate_pdq)
    assert [(e.value, e.quality, e.note) for e in parsed] == [(v, q, n) for _, v, q, n in ROWS]


def test_jsonl_keeps_chinese_unescaped() -> None:
    text = render(ROWS, "jsonl")
    assert "儿童保护" in text
    assert len(text.splitlines()) == len(ROWS)


def test_csv_quotes_note_with_comma_and_quotes() -> None:
    text = render(ROWS, "csv")
    lines = text.splitlines()
    assert lines[0] == "signal_type,signal,quality,note"
    assert len(lines) == 1 + len(ROWS)
    assert lines[2] == f'pdq,{H2},,"from ""partner"", batch 7, 儿童保护 — 已核实"'


def test_txt_round_trip_keeps_values_and_quality() -> None:
    text = render(ROWS, "txt")
    assert text.splitlines() == [f"{H1},100", H2, f"{H3},0"]
    parsed = parse(text, "txt", validate_pdq)
    # The txt format carries no notes by design.
    assert parsed == [EntryInput(H1, 100), EntryInput(H2, None), EntryInput(H3, 0)]


def test_parse_normalises_hex_case_and_skips_comments_and_blanks() -> None:
    text = f"# exported list\n\n{H2.upper()}, 80 \n   \n{H1}\n"
    parsed = parse(text, "txt", validate_pdq)
    assert [(e.value, e.quality) for e in parsed] == [(H2, 80), (H1, None)]


def test_txt_bad_hex_names_line() -> None:
    text = f"{H1}\n# comment\n{'g' * 64}\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, "txt", validate_pdq)
    assert exc.value.message.startswith("line 3:")
    assert "PDQ" in exc.value.message


def test_txt_short_hash_names_line() -> None:
    with pytest.raises(InvalidInput, match=r"^line 2: .*64 hex"):
        parse(f"{H1}\nabc123\n", "txt", validate_pdq)


def test_txt_bad_quality_names_line() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(f"{H1},50\n{H2},101\n", "txt", validate_pdq)
    assert exc.value.message.startswith("line 2:")
    assert "101" in exc.value.message
    assert "0..100" in exc.value.message


def test_txt_non_integer_quality_names_line() -> None:
    with pytest.raises(InvalidInput, match=r"^line 1: quality 'high' is not an integer"):
        parse(f"{H1},high\n", "txt", validate_pdq)


def test_csv_bad_quality_names_line() -> None:
    text = f"signal_type,signal,quality,note\npdq,{H1},10,ok\npdq,{H2},101,bad\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, "csv", validate_pdq)
    assert exc.value.message.startswith("line 3:")
    assert "101" in exc.value.message


def test_csv_wrong_signal_type_names_line() -> None:
    text = f"signal_type,signal,quality,note\npdq,{H1},10,\nmd5,{H2},,\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, "csv", validate_pdq)
    assert exc.value.message.startswith("line 3:")
    assert "md5" in exc.value.message


def test_csv_bad_hex_names_line() -> None:
    text = f"signal,quality\n{H1},\n{H2[:-1]}z,\n"
    with pytest.raises(InvalidInput, match=r"^line 3: "):
        parse(text, "csv", validate_pdq)


def test_csv_without_signal_column() -> None:
    text = f"hash,quality\n{H1},10\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, "csv", validate_pdq)
    assert "'signal' column" in exc.value.message


def test_csv_with_bom_header() -> None:
    text = "\ufeff" + render(ROWS, "csv")
    parsed = parse(text, "csv", validate_pdq)
    assert [e.value for e in parsed] == [H1, H2, H3]


def test_csv_signal_type_column_optional() -> None:
    parsed = parse(f"signal,quality,note\n{H1},77,n\n", "csv", validate_pdq)
    assert parsed == [EntryInput(H1, 77, "n")]


def test_jsonl_non_json_line_names_line() -> None:
    text = f'{{"signal": "{H1}"}}\n\n{{not json}}\n'
    with pytest.raises(InvalidInput) as exc:
        parse(text, "jsonl", validate_pdq)
    assert exc.value.message.startswith("line 3:")
    assert "not JSON" in exc.value.message


def test_jsonl_wrong_signal_type_names_line() -> None:
    text = f'{{"signal": "{H1}"}}\n{{"signal_type": "phash", "signal": "{H2}"}}\n'
    with pytest.raises(InvalidInput) as exc:
        parse(text, "jsonl", validate_pdq)
    assert exc.value.message.startswith("line 2:")
    assert "phash" in exc.value.message


def test_jsonl_bad_quality_names_line() -> None:
    text = f'{{"signal": "{H1}", "quality": 101}}\n'
    with pytest.raises(InvalidInput, match=r"^line 1: quality 101 is outside 0..100"):
        parse(text, "jsonl", validate_pdq)


def test_jsonl_missing_signal_names_line() -> None:
    text = f'{{"signal": "{H1}"}}\n["{H2}"]\n'
    with pytest.raises(InvalidInput, match=r"^line 2: expected an object"):
        parse(text, "jsonl", validate_pdq)


def test_jsonl_bad_hex_names_line() -> None:
    text = f'{{"signal": "{H1}"}}\n{{"signal": "xyz"}}\n'
    with pytest.raises(InvalidInput, match=r"^line 2: "):
        parse(text, "jsonl", validate_pdq)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown hash-list format 'xml'"):
        parse(H1, "xml", validate_pdq)
    with pytest.raises(InvalidInput, match="unknown hash-list format 'xml'"):
        list(format_lines(ROWS, "xml"))


def test_format_from_name() -> None:
    assert format_from_name("list.CSV") == "csv"
    assert format_from_name("dump.jsonl") == "jsonl"
    assert format_from_name("hashes.txt") == "txt"
    assert format_from_name("hashes") == "txt"


def test_csv_line_numbers_count_blank_lines_and_quoted_newlines() -> None:
    blank = f"signal,quality\n{H1},1\n\n{H2},101\n"
    with pytest.raises(InvalidInput, match=r"^line 4: quality 101"):
        parse(blank, "csv", validate_pdq)
    multiline = f'signal,quality,note\n{H1},1,"two\nlines"\n{H2},101,\n'
    with pytest.raises(InvalidInput, match=r"^line 4: quality 101"):
        parse(multiline, "csv", validate_pdq)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_note_with_newline(fmt: str) -> None:
    rows = [("pdq", H1, 5, 'first line\nsecond, "quoted" 行')]
    parsed = parse(render(rows, fmt), fmt, validate_pdq)
    assert [(e.value, e.quality, e.note) for e in parsed] == [(H1, 5, rows[0][3])]
