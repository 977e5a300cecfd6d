"""`moderation demo`: moderate a bundled sample set in this process and print a table."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from moderation.settings import get_settings

TEXTS: list[tuple[str, str, str]] = [
    ("text-en-benign", "What a lovely sunset over the harbour tonight!", "allow"),
    ("text-zh-benign", "今天天气很好，我们一起去公园散步吧。", "allow"),
    ("text-en-insult", "you are a f.u.c.k.i.n.g idiot and a m0therfucker", "block"),
    ("text-zh-zero-width", "你这个傻\u200b逼", "block"),
    ("text-fullwidth", "ＦＵＣＫ ＹＯＵ", "block"),
    ("text-zh-traditional-threat", "我要殺了你全家", "block"),
    ("text-zh-spam", "兼职日结，加微信 abc123 了解", "review"),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error {result['error']['code']}: {result['error']['message']}"
    parts = [
        f"{r['category']} ({r['detail']})"
        if r["source"] != "hash_match"
        else f"bank {r['category']}"
        for r in result["reasons"]
    ]
    parts += [f"match {m['bank']}#{m['entry_id']} d={m['distance']}" for m in result["matches"]]
    return "; ".join(dict.fromkeys(parts)) or "-"


def run_demo(*, as_json: bool = False) -> list[dict[str, Any]]:
    """Runs against a temporary SQLite database so the real one is untouched."""
    from moderation import banks
    from moderation.runtime import build_runtime
    from moderation.samples import encode, near_copies, photo
    from moderation.service import moderate_payload

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="moderation-demo-") as tmp:
        try:
            os.environ["MODERATION_VAR_DIR"] = tmp
            os.environ["MODERATION_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'demo.db'}"
            get_settings.cache_clear()
            rt = build_runtime(get_settings())
            from moderation.pipeline import hash_image_data, image_limits_from

            limits = image_limits_from(rt.settings)
            known = {"coffee": "demo-known-bad", "rocket": "demo-needs-review"}
            with rt.session() as s:
                banks.create_bank(s, "demo-known-bad", action="block")
                banks.create_bank(s, "demo-needs-review", action="review")
                for name, bank in known.items():
                    h = hash_image_data(encode(photo(name)), limits, name)
                    banks.add_entries(
                        s,
                        banks.get_bank_row(s, bank),
                        [banks.EntryInput(h.pdq, h.pdq_quality, f"demo {name}")],
                    )
            rt.refresh(force=True)

            items: list[tuple[str, dict[str, Any], str]] = [
                (cid, {"text": text}, want) for cid, text, want in TEXTS
            ]
            for name, want in (("coffee", "block"), ("rocket", "review"), ("astronaut", "allow")):
                for label, data in near_copies(photo(name)).items():
                    items.append(
                        (
                            f"image-{name}-{label.replace(' ', '-')}",
                            {"media": [{"kind": "image", "data_b64": _b64(data)}]},
                            want,
                        )
                    )
            rows = []
            for cid, body, want in items:
                payload = {"content_id": cid, "uploader_id": "demo", "context": {}, **body}
                result = moderate_payload(rt, payload)
                rows.append(
                    {
                        "content_id": cid,
                        "expected": want,
                        "decision": result.get("decision", "error"),
                        "why": _describe(result),
                        "result": result,
                    }
                )
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r["result"], ensure_ascii=False))
        return rows
    width = max(len(r["content_id"]) for r in rows)
    click.echo(f"{'item':{width}}  {'expected':8}  {'decision':8}  why")
    click.echo("-" * (width + 40))
    for r in rows:
        mark = "" if r["decision"] == r["expected"] else "  <-- differs"
        click.echo(
            f"{r['content_id']:{width}}  {r['expected']:8}  {r['decision']:8}  {r['why']}{mark}"
        )
    agree = sum(r["decision"] == r["expected"] for r in rows)
    click.echo(f"\n{agree}/{len(rows)} decisions as expected")
    return rows
