"""The `moderation` command line, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from moderation.samples import BENCH_TEXT
from tests.conftest import run_cli
from tests.images import jpeg, near_copy, photo

COMMANDS = [
    "serve",
    "worker",
    "moderate",
    "bank",
    "match",
    "keys",
    "demo",
    "bench",
    "db",
    "anchor",
    "verify",
    "chain",
]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=check, timeout=120)


def lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    out = cli(command, "--help").stdout
    assert out.startswith("Usage: moderation " + command)


def test_bank_add_and_match_print_one_json_line_per_file(tmp_path: Path, uid: str) -> None:
    original, copy, other = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    original.write_bytes(jpeg(photo("rocket")))
    copy.write_bytes(near_copy(photo("rocket")))
    other.write_bytes(jpeg(photo("immunohistochemistry")))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    bank = f"cli-{uid}"

    created = lines(
        cli(
            "bank",
            "create",
            bank,
            "--kind",
            "image",
            "--threshold",
            "31",
            "--action",
            "review",
            "--json",
        ).stdout
    )[0]
    assert created["name"] == bank and created["threshold"] == 31 and created["action"] == "review"

    added = cli("bank", "add", bank, str(original), str(broken), "--json", check=False)
    assert added.returncode == 1  # one file failed
    first, second = lines(added.stdout)
    assert first["path"] == str(original) and isinstance(first["entry_id"], int)
    assert second["path"] == str(broken) and "error" in second

    matched = lines(cli("match", str(copy), str(other), "--bank", bank, "--json").stdout)
    assert matched[0]["path"] == str(copy)
    assert [m["entry_id"] for m in matched[0]["matches"]] == [first["entry_id"]]
    assert matched[0]["matches"][0]["bank"] == bank
    assert 0 <= matched[0]["matches"][0]["distance"] <= 31
    assert matched[1] == {"path": str(other), "matches": []}

    exported = cli("bank", "export", bank, "--format", "txt").stdout.split()
    assert len(exported) == 1 and len(exported[0].split(",")[0]) == 64
    sizes = {b["name"]: b["size"] for b in lines(cli("bank", "list", "--json").stdout)}
    assert sizes[bank] == 1


def test_moderate_prints_the_verdict(uid: str) -> None:
    verdict = lines(
        cli("moderate", "--text", "你这个傻\u200b逼", "--content-id", f"cli-{uid}", "--json").stdout
    )[0]
    assert verdict["content_id"] == f"cli-{uid}"
    assert verdict["decision"] == "block"
    assert any("傻逼" in r["detail"] for r in verdict["reasons"])


def test_moderate_reports_a_bad_image_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = cli("moderate", "--image", str(bad), "--json", check=False)
    assert run.returncode == 2
    assert lines(run.stdout)[0]["error"]["code"] == "media_decode_error"


def test_keys_create_prints_a_working_key_once() -> None:
    from moderation.keys import authenticate
    from moderation.settings import get_settings
    from moderation.storage import db

    created = lines(
        cli("keys", "create", "--role", "reviewer", "--name", "cli-rev", "--json").stdout
    )[0]
    with db.session_scope(get_settings().resolved_database_url) as s:
        assert authenticate(s, created["key"]).role == "reviewer"
    listed = cli("keys", "list", "--json").stdout
    assert created["key"] not in listed and "cli-rev" in listed


def test_demo_decides_every_sample_as_expected() -> None:
    from moderation.demo import run_demo

    rows = run_demo(as_json=True)
    assert len(rows) >= 15
    wrong = [
        (r["content_id"], r["expected"], r["decision"])
        for r in rows
        if r["decision"] != r["expected"]
    ]
    assert wrong == []


def test_bench_text_reports_each_enabled_model_and_the_text_path() -> None:
    report = json.loads(
        cli("bench", "text", "--reps", "5", "--batches", "2", "--path-reps", "5", "--json").stdout
    )
    # The packaged policy enables the builtin model, int8 as its config says.
    assert list(report["models"]) == ["builtin"]
    assert report["models"]["builtin"]["quantization"] == "int8"
    for stats in (
        report["models"]["builtin"]["single"],
        report["models"]["builtin"]["batch_of_32"],
        report["text_path"],
    ):
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert report["text_path"]["chars"] == len(BENCH_TEXT) + 7 and report["text_path"]["reps"] == 5
    assert "--reps" in cli("bench", "text", "--reps", "0", check=False).stderr
