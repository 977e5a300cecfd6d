"""Leaves and receipts: canonical encoding, offline verification, tampering, speed."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.errors import InvalidReceipt
from chain.leaf import Leaf, encode_new_leaf
from chain.merkle import MerkleTree
from chain.receipt import AnchorRecord, ProofRecord, Receipt, parse_receipt, verify_offline

AT = datetime(2026, 11, 22, 22, 10, 0, tzinfo=UTC)


def make_leaf(i: int, owner: str = "studio-a") -> Leaf:
    # A fixed salt per leaf: hypothesis replays a failing example, which must draw from the
    # same receipts (a fresh salt changes the byte spans it samples).
    return Leaf.create(
        id=f"work-{i}",
        sha256=f"{i:064x}",
        owner=owner,
        at=AT,
        perceptual=[("pdq", "ab" * 32), ("phash", f"{i:016x}")],
        salt=hashlib.sha256(f"salt-{owner}-{i}".encode()).hexdigest(),
    )


def make_receipts(n: int) -> list[Receipt]:
    leaves = [make_leaf(i) for i in range(n)]
    tree = MerkleTree([leaf.hash() for leaf in leaves])
    anchor = AnchorRecord(
        chain_id=131277322940537,
        contract="0x" + "ae" * 20,
        transaction_hash="0x" + "a6" * 32,
        block_number=3,
        block_hash="0x" + "6e" * 32,
        log_index=0,
        anchored_at="2026-11-22T22:10:05Z",
    )
    out = []
    for i, leaf in enumerate(leaves):
        p = tree.proof(i)
        out.append(
            Receipt(
                leaf=leaf,
                proof=ProofRecord(
                    leaf_index=i, tree_size=n, path=tuple("0x" + h.hex() for h in p.path)
                ),
                root="0x" + tree.root.hex(),
                anchor=anchor,
            )
        )
    return out


def test_canonical_encoding_is_sorted_compact_utf8() -> None:
    leaf = Leaf(
        id="作品-1",
        sha256="00" * 32,
        perceptual=({"alg": "pdq", "value": "ff" * 32},),  # type: ignore[arg-type]
        owner="studio",
        time="2026-11-22T22:10:00Z",
        salt="11" * 32,
    )
    expected = (
        '{"id":"作品-1","owner":"studio","perceptual":[{"alg":"pdq","value":"'
        + "ff" * 32
        + '"}],"salt":"'
        + "11" * 32
        + '","sha256":"'
        + "00" * 32
        + '","time":"2026-11-22T22:10:00Z","v":1}'
    )
    assert leaf.canonical() == expected.encode()


def test_create_sorts_hashes_and_salts_each_leaf() -> None:
    a = Leaf.create(
        id="w", sha256="AA" * 32, owner="o", at=AT, perceptual=[("phash", "1F"), ("pdq", "00")]
    )
    b = Leaf.create(
        id="w", sha256="aa" * 32, owner="o", at=AT, perceptual=[("pdq", "00"), ("phash", "1f")]
    )
    assert [p.alg for p in a.perceptual] == ["pdq", "phash"]
    assert a.sha256 == "aa" * 32
    assert a.salt != b.salt and a.hash() != b.hash()
    assert a.model_copy(update={"salt": b.salt}).canonical() == b.canonical()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sha256": "AA" * 32}, "sha256"),
        ({"salt": "11" * 31}, "salt"),
        ({"time": "2026-11-22 22:10:00"}, "time"),
        ({"time": "2026-13-40T22:10:00Z"}, "time"),
        (
            {"perceptual": [{"alg": "phash", "value": "00"}, {"alg": "pdq", "value": "00"}]},
            "sorted",
        ),
        ({"id": ""}, "id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_non_canonical_leaves_are_refused(change: dict[str, object], problem: str) -> None:
    body = json.loads(make_receipts(1)[0].to_json())
    body["leaf"].update(change)
    with pytest.raises(InvalidReceipt, match=problem):
        parse_receipt(json.dumps(body))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100])
def test_every_receipt_of_a_batch_verifies(n: int) -> None:
    for receipt in make_receipts(n):
        again = parse_receipt(receipt.to_json())
        assert again == receipt
        assert verify_offline(again).valid


def _value_spans(text: str) -> list[tuple[int, int]]:
    """Byte ranges of the leaf's values, its salt, the proof path and the root."""
    spans = []
    body = json.loads(text)
    values = [str(v) for k, v in body["leaf"].items() if k not in ("perceptual", "v")]
    values += [p["value"] for p in body["leaf"]["perceptual"]]
    values += [*body["proof"]["path"], body["root"]]
    for value in values:
        for m in re.finditer(re.escape(json.dumps(value, ensure_ascii=False)[1:-1]), text):
            spans.append((m.start(), m.end()))
    return spans


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.data())
def test_any_changed_byte_in_leaf_salt_path_or_root_fails(n: int, data) -> None:  # type: ignore[no-untyped-def]
    receipt = data.draw(st.sampled_from(make_receipts(n)))
    text = receipt.to_json()
    spans = _value_spans(text)
    start, end = data.draw(st.sampled_from(spans))
    pos = data.draw(st.integers(start, end - 1))
    replacement = data.draw(
        st.sampled_from("0123456789abcdefxAZ-_ é").filter(lambda c: c != text[pos])
    )
    changed = text[:pos] + replacement + text[pos + 1 :]
    try:
        check = verify_offline(parse_receipt(changed))
    except InvalidReceipt as exc:
        assert str(exc)
        return
    assert not check.valid, (pos, replacement)
    assert check.reason


def test_changed_index_fails_and_says_why() -> None:
    receipt = make_receipts(10)[3]
    body = json.loads(receipt.to_json())
    body["proof"]["leaf_index"] = 4
    check = verify_offline(parse_receipt(json.dumps(body)))
    assert not check.valid and "root" in check.reason
    body["proof"]["leaf_index"] = 10
    check = verify_offline(parse_receipt(json.dumps(body)))
    assert not check.valid and "outside" in check.reason


def test_garbage_is_an_invalid_receipt_not_a_crash() -> None:
    for bad in (b"", b"{", b"[]", b'{"version": 2}', b"\xff\xfe", b"x" * (2 << 20)):
        with pytest.raises(InvalidReceipt):
            parse_receipt(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}", fullmatch=True),
            st.binary(min_size=1, max_size=8),
        ),
        max_size=4,
    ),
)
def test_fast_encoding_is_sorted_key_json(subject: str, owner: str, hashes: list) -> None:  # type: ignore[type-arg]
    perceptual = [(alg, value.hex()) for alg, value in hashes]
    leaf = Leaf.create(id=subject, sha256="ab" * 32, owner=owner, at=AT, perceptual=perceptual)
    expected = json.dumps(
        leaf.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert leaf.canonical() == expected
    assert Leaf.model_validate_json(expected) == leaf
    fast = encode_new_leaf(
        id=subject, sha256="AB" * 32, owner=owner, at=AT, perceptual=perceptual, salt=leaf.salt
    )
    assert fast.preimage == expected and fast.hash == leaf.hash()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"id": ""}, "id"),
        ({"owner": "x" * 257}, "owner"),
        ({"sha256": "zz" * 32}, "sha256"),
        ({"salt": "AB" * 32}, "salt"),
        ({"perceptual": [("PDQ", "00")]}, "algorithm"),
        ({"perceptual": [("pdq", "0")]}, "pdq"),
        ({"at": "yesterday"}, "RFC 3339"),
    ],
)
def test_create_names_the_bad_field(kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {"id": "w", "sha256": "ab" * 32, "owner": "o", "at": AT}
    args.update(kwargs)
    with pytest.raises(ValueError, match=problem):
        encode_new_leaf(**args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=problem):
        Leaf.create(**args)  # type: ignore[arg-type]
