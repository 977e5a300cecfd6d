"""Ledger clients on the embedded chain: anchoring, lookups, restarts, reorgs, keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chain.contract import ANCHORED_EVENT, artifact
from chain.embedded import EmbeddedLedger
from chain.errors import LedgerConfigError, LedgerUnavailable
from chain.ledger import connect_rpc, load_private_key


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chain")


@pytest.fixture(scope="module")
def ledger(chain_dir: Path) -> EmbeddedLedger:
    return EmbeddedLedger.open(chain_dir)


def test_committed_artifact_matches_its_event_and_source() -> None:
    from eth_utils import keccak

    art = artifact()
    assert "0x" + keccak(text="Anchored(bytes32,uint256)").hex() == ANCHORED_EVENT
    event = next(e for e in art["abi"] if e.get("name") == "Anchored")
    assert [i["indexed"] for i in event["inputs"]] == [True, False]
    assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 100
    source = (Path(__file__).parents[1] / "chain" / "contracts" / "Anchor.sol").read_text()
    assert "event Anchored(bytes32 indexed root, uint256 leafCount);" in source


def test_anchor_is_found_by_receipt_and_by_block(ledger: EmbeddedLedger) -> None:
    ledger.check_contract()
    sent = ledger.send_anchor(b"\x11" * 32, 10_000)
    inclusion = ledger.inclusion(sent.transaction_hash)
    assert inclusion is not None and inclusion.succeeded
    (log,) = inclusion.logs
    assert log.root == "0x" + "11" * 32 and log.leaf_count == 10_000
    assert ledger.anchored_logs(inclusion.block_number) == [log]
    block = ledger.block(inclusion.block_number)
    assert block is not None and block.hash == inclusion.block_hash
    ledger.advance()
    assert ledger.head() == inclusion.block_number + 1
    assert ledger.inclusion("0x" + "00" * 32) is None
    assert ledger.block(10_000) is None


def test_bad_anchor_arguments_are_refused(ledger: EmbeddedLedger) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ledger.send_anchor(b"short", 1)
    with pytest.raises(ValueError, match="positive"):
        ledger.send_anchor(b"\x00" * 32, 0)


def test_blocks_keep_their_hashes_after_a_restart(chain_dir: Path, ledger: EmbeddedLedger) -> None:
    sent = ledger.send_anchor(b"\x22" * 32, 3)
    before = ledger.inclusion(sent.transaction_hash)
    # A new process replays the journal and sees the same block hash.
    code = (
        "import sys, json; from pathlib import Path; from chain.embedded import EmbeddedLedger;"
        "L = EmbeddedLedger.open(Path(sys.argv[1]), read_only=True);"
        "i = L.inclusion(sys.argv[2]); print(json.dumps([i.block_number, i.block_hash, L.head()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(chain_dir), sent.transaction_hash],
        capture_output=True,
        text=True,
        check=True,
    )
    assert before is not None
    assert json.loads(out.stdout) == [before.block_number, before.block_hash, ledger.head()]


def test_two_openers_of_one_directory_stay_in_step(chain_dir: Path, ledger: EmbeddedLedger) -> None:
    other = EmbeddedLedger.open(chain_dir)
    sent = other.send_anchor(b"\x33" * 32, 5)
    assert ledger.inclusion(sent.transaction_hash) is not None
    # Our nonce follows the node: the other opener's transaction used one.
    mine = ledger.send_anchor(b"\x44" * 32, 6)
    assert mine.nonce == sent.nonce + 1


def test_revert_drops_blocks_and_rebroadcast_lands_later(ledger: EmbeddedLedger) -> None:
    snap = ledger.chain.snapshot()
    sent = ledger.send_anchor(b"\x55" * 32, 7)
    first = ledger.inclusion(sent.transaction_hash)
    assert first is not None
    ledger.chain.revert(snap)
    assert ledger.inclusion(sent.transaction_hash) is None
    ledger.advance()  # the competing fork grows past the old block
    assert ledger.broadcast(sent.raw_transaction)
    again = ledger.inclusion(sent.transaction_hash)
    assert again is not None and again.block_number > first.block_number
    assert again.block_hash != first.block_hash
    # A transaction whose nonce is used already is refused, not re-mined.
    assert not ledger.broadcast(sent.raw_transaction)


def test_a_tampered_journal_is_refused(tmp_path: Path) -> None:
    EmbeddedLedger.open(tmp_path).send_anchor(b"\x66" * 32, 1)
    journal = tmp_path / "journal.jsonl"
    lines = journal.read_text().splitlines()
    entry = json.loads(lines[-1])
    entry["timestamp"] += 1
    journal.write_text("\n".join([*lines[:-1], json.dumps(entry)]) + "\n")
    with pytest.raises(LedgerConfigError, match="replays to"):
        EmbeddedLedger.open(tmp_path)


def test_read_only_opening_never_writes(tmp_path: Path) -> None:
    with pytest.raises(LedgerConfigError, match="no anchor contract"):
        EmbeddedLedger.open(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


def test_private_keys_come_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ab" * 32
    key_file = tmp_path / "key"
    key_file.write_text(f"0x{secret}\n")
    assert load_private_key(key_file=key_file) == "0x" + secret
    monkeypatch.setenv("TEST_ANCHOR_KEY", secret.upper())
    assert load_private_key(env_var="TEST_ANCHOR_KEY") == "0x" + secret
    bad = tmp_path / "bad"
    bad.write_text("cd" * 31 + "zz")
    with pytest.raises(LedgerConfigError) as exc:
        load_private_key(key_file=bad)
    assert "cd" * 31 not in str(exc.value)  # never echo what may be a real key
    with pytest.raises(LedgerConfigError, match="holds no private key"):
        load_private_key(env_var="TEST_ANCHOR_KEY_UNSET")
    with pytest.raises(LedgerConfigError, match="cannot read"):
        load_private_key(key_file=tmp_path / "nope")


def test_rpc_ledger_config_and_unreachable_node() -> None:
    with pytest.raises(LedgerConfigError, match="http"):
        connect_rpc("ws://127.0.0.1:1", "0x" + "00" * 20)
    with pytest.raises(LedgerConfigError, match="address"):
        connect_rpc("http://127.0.0.1:1", "0x1234")
    ledger = connect_rpc("http://127.0.0.1:1", "0x" + "00" * 20, timeout_s=0.5)
    with pytest.raises(LedgerUnavailable):
        ledger.head()
    with pytest.raises(LedgerConfigError, match="only read"):
        ledger.send_anchor(b"\x00" * 32, 1)


def test_rpc_ledger_over_http_against_the_embedded_chain(tmp_path: Path) -> None:
    """The JSON-RPC client end to end: web3's HTTPProvider, a local key, raw transactions."""
    from chain.embedded import DEV_PRIVATE_KEY, EmbeddedChain
    from chain.rpc_server import serve_embedded

    chain = EmbeddedChain(tmp_path)
    server, url = serve_embedded(chain)
    try:
        assert chain.contract_address is not None
        ledger = connect_rpc(url, chain.contract_address, private_key=DEV_PRIVATE_KEY)
        ledger.check_contract()
        assert ledger.chain_id == EmbeddedLedger(chain).chain_id
        sent = ledger.send_anchor(b"\x77" * 32, 42)
        inclusion = ledger.inclusion(sent.transaction_hash)
        assert inclusion is not None and inclusion.succeeded and inclusion.gas_used > 21_000
        assert ledger.anchored_logs(inclusion.block_number) == list(inclusion.logs)
        assert inclusion.logs[0].leaf_count == 42
        assert ledger.block(10_000) is None and ledger.inclusion("0x" + "00" * 32) is None
        # Refused for good once mined (its nonce is used): the job signs anew then.
        assert not ledger.broadcast(sent.raw_transaction)
        # The chain's own view agrees: the transaction was journaled by the server's chain.
        assert EmbeddedLedger.open(tmp_path, read_only=True).inclusion(sent.transaction_hash)
    finally:
        server.shutdown()


def test_a_restart_replays_only_the_journal_after_the_saved_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chain import embedded

    monkeypatch.setattr(embedded, "STATE_EVERY", 8)
    ledger = EmbeddedLedger.open(tmp_path)
    snap = ledger.chain.snapshot()
    sent = ledger.send_anchor(b"\x88" * 32, 9)
    ledger.chain.mine(20)
    assert (tmp_path / "state.bin").exists()
    before, head = ledger.inclusion(sent.transaction_hash), ledger.head()

    applied: list[int] = []
    real_apply = embedded.EmbeddedChain._apply

    def counting(self: embedded.EmbeddedChain, entry: dict) -> None:  # type: ignore[type-arg]
        applied.append(entry["number"])
        real_apply(self, entry)

    monkeypatch.setattr(embedded.EmbeddedChain, "_apply", counting)
    reopened = EmbeddedLedger.open(tmp_path, read_only=True)
    assert reopened.inclusion(sent.transaction_hash) == before and reopened.head() == head
    assert reopened.contract == ledger.contract
    assert len(applied) < 8  # the tail after the last saved state, not all 22 blocks

    # A damaged state file costs a full replay, never a wrong chain.
    (tmp_path / "state.bin").write_bytes(b'{"blocks": 16, "hash": "0x00"}\n' + b"\x00" * 9)
    applied.clear()
    again = EmbeddedLedger.open(tmp_path, read_only=True)
    assert again.inclusion(sent.transaction_hash) == before and len(applied) == head
    # Reverting below the saved state drops it; the next start replays the journal.
    ledger.chain.revert(snap)
    assert not (tmp_path / "state.bin").exists()
    after = EmbeddedLedger.open(tmp_path, read_only=True)
    assert after.inclusion(sent.transaction_hash) is None and after.head() == ledger.head()
