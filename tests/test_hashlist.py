"""Tests for moderation.hashlist: the interchange formats, detection, round trips, bad lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from moderation.banks import EntryInput, validate_pdq
from moderation.errors import InvalidInput
from moderation.hashlist import (
    FORMATS,
    MAX_REPORTED_ERRORS,
    detect_format,
    format_from_name,
    format_lines,
    parse,
)

H1 = "f" * 64
H2 = "0123456789abcdef" * 4
H3 = "a5" * 32
TRICKY_NOTE = 'from "partner", batch 7, 儿童保护 — 已核实'

ROWS: list[tuple[str, str, int | None, str]] = [
    ("pdq", H1, 100, "plain note"),
    ("pdq", H2, None, TRICKY_NOTE),
    ("pdq", H3, 0, ""),
]


def render(rows: Sequence[tuple[str, str, int | None, str]], fmt: str) -> str:
    return "".join(format_lines(rows, fmt))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_keeps_values_quality_and_notes(fmt: str) -> None:
    text = render(ROWS, fmt)
    parsed = parse(text, fmt, validate_pdq).entries
    assert [(e.value, e.quality, e.note) for e in parsed] == [(v, q, n) for _, v, q, n in ROWS]


def test_jsonl_keeps_chinese_unescaped() -> None:
    text = render(ROWS, "jsonl")
    assert "儿童保护" in text
    assert len(text.splitlines()) == len(ROWS)


def test_csv_quotes_note_with_comma_and_quotes() -> None:
    text = render(ROWS, "csv")
    lines = text.splitlines()
    assert lines[0] == "signal_type,signal_str,quality,note"
    assert len(lines) == 1 + len(ROWS)
    assert lines[2] == f'pdq,{H2},,"from ""partner"", batch 7, 儿童保护 — 已核实"'


def test_txt_round_trip_keeps_values_and_quality() -> None:
    text = render(ROWS, "txt")
    assert text.splitlines() == [f"{H1},100", H2, f"{H3},0"]
    parsed = parse(text, "txt", validate_pdq).entries
    # The txt format carries no notes by design.
    assert parsed == [EntryInput(H1, 100), EntryInput(H2, None), EntryInput(H3, 0)]


def test_parse_normalises_hex_case_and_skips_comments_and_blanks() -> None:
    text = f"# exported list\n\n{H2.upper()}, 80 \n   \n{H1}\n"
    parsed = parse(text, "txt", validate_pdq).entries
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
    text = f"digest,quality\n{H1},10\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, "csv", validate_pdq, skip_bad=True)  # a whole-file problem, never skipped
    assert exc.value.message.startswith("line 1: CSV hash list needs a header with a signal")
    assert "signal_str, signal, signal_value" in exc.value.message


def test_csv_with_bom_header() -> None:
    text = "\ufeff" + render(ROWS, "csv")
    parsed = parse(text, "csv", validate_pdq).entries
    assert [e.value for e in parsed] == [H1, H2, H3]


def test_csv_signal_type_column_optional() -> None:
    parsed = parse(f"signal,quality,note\n{H1},77,n\n", "csv", validate_pdq).entries
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
    with pytest.raises(InvalidInput, match=r"^line 2: expected a JSON object"):
        parse(text, "jsonl", validate_pdq)
    with pytest.raises(InvalidInput, match=r"^line 1: expected an object with a string signal"):
        parse('{"quality": 5}', "jsonl", validate_pdq)


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
    parsed = parse(render(rows, fmt), fmt, validate_pdq).entries
    assert [(e.value, e.quality, e.note) for e in parsed] == [(H1, 5, rows[0][3])]


# --- exact export bytes and round trips, every format ----------------------------------------


def test_export_bytes_are_exactly_the_documented_formats() -> None:
    assert render(ROWS, "txt") == f"{H1},100\n{H2}\n{H3},0\n"
    assert render(ROWS, "csv") == (
        "signal_type,signal_str,quality,note\n"
        f"pdq,{H1},100,plain note\n"
        f'pdq,{H2},,"from ""partner"", batch 7, 儿童保护 — 已核实"\n'
        f"pdq,{H3},0,\n"
    )
    assert render(ROWS[:1], "jsonl") == (
        f'{{"signal_type": "pdq", "signal_str": "{H1}", "quality": 100, "note": "plain note"}}\n'
    )
    assert render(ROWS, "hma") == "".join(f'{{"pdq": "{v}"}}\n' for _, v, _, _ in ROWS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_parse_format_is_byte_identical(fmt: str) -> None:
    rows = [*ROWS, ("pdq", "ab" * 32, 55, 'multi\nline "note", 行')]
    text = render(rows, fmt)
    parsed = parse(text, None, validate_pdq)  # detected, not told
    assert parsed.format == ("jsonl" if fmt == "hma" else fmt)
    again = render([("pdq", e.value, e.quality, e.note) for e in parsed.entries], fmt)
    assert again == text


def test_detect_format() -> None:
    assert detect_format(f"{H1},80\n") == "txt"
    assert detect_format(f"# PDQ list\n\npdq {H1}\n") == "txt"
    assert detect_format(f"signal_type,signal_str,quality,note\npdq,{H1},,\n") == "csv"
    assert detect_format(f'\ufeff"signal_value"\n{H1}\n') == "csv"
    assert detect_format(f'{{"pdq": "{H1}"}}\n') == "jsonl"
    assert detect_format("") == "txt"
    assert detect_format(f"{H1},100,value\n") == "txt"  # a file named "value", not a header


# --- what other programmes write --------------------------------------------------------------


def test_pdq_reference_hasher_output() -> None:
    """pdq-photo-hasher prints `hash,quality,filename`, and with -d `hash=...,quality=...`."""
    text = (
        f"{H1},100,/data/img 1.jpg\n"
        f"{H2},49,b,c.png\n"
        f"hash={H3},norm=128,delta=0,quality=87,filename=x, y.jpg\n"
    )
    parsed = parse(text, None, validate_pdq)
    assert [(e.value, e.quality, e.note) for e in parsed.entries] == [
        (H1, 100, "/data/img 1.jpg"),
        (H2, 49, "b,c.png"),
        (H3, 87, "x, y.jpg"),
    ]


def test_hash_and_quality_separated_by_whitespace() -> None:
    parsed = parse(f"{H1} 90\n{H2}\t7\n", None, validate_pdq)
    assert [(e.value, e.quality) for e in parsed.entries] == [(H1, 90), (H2, 7)]


def test_python_threatexchange_signal_file() -> None:
    """LocalFileSignalExchangeAPI lines: `<signal_type> <signal>`; ThreatExchange's own
    indicator type name HASH_PDQ is accepted too."""
    parsed = parse(f"pdq {H1}\nHASH_PDQ {H2}\n", None, validate_pdq)
    assert [e.value for e in parsed.entries] == [H1, H2]
    with pytest.raises(InvalidInput, match=r"^line 2: signal_type 'video_md5' cannot go in a pdq"):
        parse(f"pdq {H1}\nvideo_md5 {'a' * 32}\n", None, validate_pdq)


def test_python_threatexchange_dataset_csv() -> None:
    """`threatexchange dataset -P --csv` writes signal_type,signal_str,collab,category,tags."""
    text = (
        "signal_type,signal_str,collab,category,tags\n"
        f"pdq,{H1},Sample Data,TRUE_POSITIVE,media_type_photo violence\n"
        f"pdq,{H2},Sample Data,WORTH_INVESTIGATING,\n"
        f"pdq,{H3},Other,FALSE_POSITIVE,\n"
    )
    parsed = parse(text, None, validate_pdq, skip_bad=True)
    assert parsed.format == "csv"
    assert parsed.entries == [
        EntryInput(H1, None, "tags: media_type_photo violence", "Sample Data"),
        EntryInput(H2, None, "", "Sample Data"),
    ]
    assert [str(e) for e in parsed.errors] == [
        "line 4: category FALSE_POSITIVE says the hash is not a match; refusing to bank it"
    ]
    older = "collab,signal_type,signal_str,category,tags\n" + f"c,pdq,{H1},TRUE_POSITIVE,\n"
    assert parse(older, None, validate_pdq).entries == [EntryInput(H1, None, "", "c")]


def test_hma_signal_bodies_and_content_objects() -> None:
    """HMA's POST /c/bank/<bank>/signal takes {"pdq": "<hex>"}; its bank content responses
    carry {"id": ..., "signals": {...}}."""
    text = (
        f'{{"pdq": "{H1.upper()}"}}\n'
        f'{{"id": 12, "signals": {{"video_md5": "{"b" * 32}", "pdq": "{H2}"}}}}\n'
        f'{{"signal_value": "{H3}", "signal_type": "pdq", "metadata": {{"content_id": "x"}}}}\n'
    )
    parsed = parse(text, None, validate_pdq)
    assert [(e.value, e.note) for e in parsed.entries] == [
        (H1, ""),
        (H2, ""),
        (H3, '{"content_id": "x"}'),
    ]
    with pytest.raises(InvalidInput, match=r"^line 1: no pdq signal in this object"):
        parse(f'{{"video_md5": "{"b" * 32}"}}\n', "hma", validate_pdq)


@pytest.mark.parametrize("column", ["signal", "signal_str", "signal_value", "value", "hash", "pdq"])
def test_csv_signal_column_names(column: str) -> None:
    parsed = parse(f"{column},Quality\n{H1},12\n", None, validate_pdq)
    assert parsed.entries == [EntryInput(H1, 12)]


# --- bad lines --------------------------------------------------------------------------------


def test_every_bad_line_is_named_and_nothing_is_returned() -> None:
    text = f"{H1}\nzz\n{H2},500\n{H3}\n{'a' * 63}\n"
    with pytest.raises(InvalidInput) as exc:
        parse(text, None, validate_pdq)
    message = exc.value.message
    assert message.startswith("3 bad lines in the hash list: line 2: not a PDQ hash")
    assert "line 3: quality 500 is outside 0..100" in message
    assert "line 5: not a PDQ hash" in message
    assert exc.value.detail["bad_lines"] == 3
    assert [e["line"] for e in exc.value.detail["errors"]] == [2, 3, 5]
    assert exc.value.field == "body"


def test_skip_bad_keeps_the_good_lines_and_reports_the_rest() -> None:
    text = f"{H1}\nzz\n{H2},500\n{H3}\n"
    parsed = parse(text, None, validate_pdq, skip_bad=True)
    assert [e.value for e in parsed.entries] == [H1, H3]
    assert parsed.bad_lines == 2
    assert [e.to_dict()["line"] for e in parsed.errors] == [2, 3]
    assert parsed.errors[1].to_dict() == {"line": 3, "error": "quality 500 is outside 0..100"}


def test_reported_errors_are_capped_but_counted() -> None:
    text = "bad\n" * (MAX_REPORTED_ERRORS + 5)
    parsed = parse(text, "txt", validate_pdq, skip_bad=True)
    assert parsed.bad_lines == MAX_REPORTED_ERRORS + 5
    assert len(parsed.errors) == MAX_REPORTED_ERRORS
    with pytest.raises(InvalidInput) as exc:
        parse(text, "txt", validate_pdq)
    assert exc.value.message.endswith(f"; and {MAX_REPORTED_ERRORS + 5 - 10} more")
    assert len(exc.value.detail["errors"]) == 100


def test_txt_line_with_too_many_fields() -> None:
    with pytest.raises(InvalidInput, match=r"^line 1: 3 fields; expected '<hash>'"):
        parse(f"{H1} 5 extra\n", "txt", validate_pdq)


def test_json_bad_field_types_name_the_line() -> None:
    bad = [
        ({"signal_str": 5}, "signal_str must be a string, got int"),
        ({"signal_str": H1, "quality": "x"}, "quality 'x' is not an integer"),
        ({"signal_str": H1, "quality": True}, "quality True is not an integer"),
        ({"signal_str": H1, "signal_type": "md5"}, "signal_type 'md5' cannot go in a pdq bank"),
        ({"signal_str": H1, "category": "FALSE_POSITIVE"}, "category FALSE_POSITIVE says"),
    ]
    for obj, message in bad:
        with pytest.raises(InvalidInput) as exc:
            parse(json.dumps(obj), "jsonl", validate_pdq)
        assert exc.value.message.startswith(f"line 1: {message}"), obj


def test_default_source_only_where_the_line_names_none() -> None:
    text = f"signal_str,collab\n{H1},partner-x\n{H2},\n"
    parsed = parse(text, None, validate_pdq, default_source="import.csv")
    assert [e.source for e in parsed.entries] == ["partner-x", ""]
    parsed = parse(f"{H1}\n", None, validate_pdq, default_source="import.txt")
    assert parsed.entries[0].source == "import.txt"


def test_csv_nul_byte_is_a_line_error() -> None:
    text = f"signal_str\n{H1}\n\x00{H2}\n"
    parsed = parse(text, "csv", validate_pdq, skip_bad=True)
    assert [e.value for e in parsed.entries] == [H1]
    assert parsed.bad_lines >= 1


# --- the CLI: `moderation bank export` / `bank import` ---------------------------------------


def run_cli(*args: str) -> str:
    """Run a command in-process (fast); the session's test database via conftest's env."""
    from click.testing import CliRunner

    from moderation.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_import_detects_skips_reports_and_round_trips(tmp_path: Path, uid: str) -> None:
    src = f"cli-hl-src-{uid}"
    run_cli("bank", "create", src)
    shared = tmp_path / "shared.txt"
    shared.write_text(f"# from a partner\n{H1},100,a.jpg\nnot-a-hash\npdq {H2}\n{H3} 7\n")

    # The real entry point: a bad line refuses the list, exit status 2, the line named.
    strict = subprocess.run(
        [sys.executable, "-m", "moderation", "bank", "import", src, str(shared)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 2
    assert strict.stderr.startswith("error: line 3: not a PDQ hash")

    report = json.loads(run_cli("bank", "import", src, str(shared), "--skip-bad", "--json"))
    assert report == {
        "bank": src,
        "format": "txt",
        "imported": 3,
        "distinct": 3,
        "added": 3,
        "skipped": 1,
        "errors": [report["errors"][0]],
    }
    assert report["errors"][0]["line"] == 3
    assert run_cli("bank", "export", src) == f"{H1},100\n{H2}\n{H3},7\n"

    for fmt in FORMATS:  # export -> import into an empty bank -> export: the same bytes
        dst = f"cli-hl-{fmt}-{uid}"
        run_cli("bank", "create", dst)
        exported = tmp_path / f"a.{fmt}"
        run_cli("bank", "export", src, "--format", fmt, "--out", str(exported))
        imported = run_cli("bank", "import", dst, str(exported))  # format detected
        assert imported.startswith(f"imported 3 entries into {dst}")
        assert run_cli("bank", "export", dst, "--format", fmt) == exported.read_text("utf-8")
