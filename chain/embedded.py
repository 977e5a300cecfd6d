"""An embedded EVM chain (eth-tester on py-evm) that survives restarts.

py-evm keeps its state in memory, so the chain is kept as a journal instead: one JSON line
per block (number, timestamp, the raw signed transactions, the block hash), appended under
an exclusive file lock before the block is used. At start the journal is replayed (from the
last saved state, written every ``STATE_EVERY`` blocks, when it matches): mining is
made deterministic (fixed genesis, the journaled timestamps, a ``mix_hash`` derived from the
parent instead of random bytes), so every block gets back its original hash and receipts
issued before a restart still verify after it. Each replayed block's hash is checked.

Several processes (workers, the verifier) may open the same directory: each replays the
journal lines it has not seen before any read or write, and writes under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.errors import LedgerConfigError
from chain.ledger import AnchoredLog, BlockInfo, GasSettings, Inclusion, Web3Ledger

if TYPE_CHECKING:
    from web3 import Web3

__all__ = ["DEV_PRIVATE_KEY", "EmbeddedChain", "EmbeddedLedger", "Snapshot"]

# eth-tester's first pre-funded account (private key 1): public knowledge, fine for a
# local chain whose only job is to be verifiable by whoever holds the journal.
DEV_PRIVATE_KEY = "0x" + "00" * 31 + "01"
GENESIS_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z: every start builds the same genesis
JOURNAL = "journal.jsonl"
LOCK = "journal.lock"
STATE = "state.bin"
# Every this many blocks the whole state is saved, so a start replays at most this many
# (replay costs ~2 ms a block; the state of 500 blocks is ~0.4 MB).
STATE_EVERY = 256
_MIX_DOMAIN = b"moderation-embedded-chain/mix-hash"


@dataclass(frozen=True)
class Snapshot:
    """A point to revert the chain to (tests simulate reorgs with it)."""

    tester_id: Any
    blocks: int


@lru_cache(maxsize=1)
def _backend_class() -> Any:
    from eth.vm.forks import PragueVM
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.main import get_total_blob_gas

    class ReplayableBackend(PyEVMBackend):
        """PyEVMBackend whose blocks depend only on their contents and a given timestamp."""

        next_timestamp: int = 0

        def mine_blocks(
            self, num_blocks: int = 1, coinbase: bytes = b"\0" * 20
        ) -> tuple[bytes, ...]:
            hashes = []
            for _ in range(num_blocks):
                parent = self.chain.get_canonical_head()
                kwargs: dict[str, Any] = {
                    "coinbase": coinbase,
                    "timestamp": max(self.next_timestamp, parent.timestamp + 1),
                    "mix_hash": hashlib.sha256(_MIX_DOMAIN + parent.hash).digest(),
                }
                if isinstance(self.chain.get_vm(), PragueVM):
                    txs = self.chain.get_block().transactions
                    kwargs["blob_gas_used"] = sum(get_total_blob_gas(tx) for tx in txs)
                hashes.append(self.chain.mine_block(**kwargs).hash)
            return tuple(hashes)

    return ReplayableBackend


class EmbeddedChain:
    """The chain in this process, kept in step with the journal in ``directory``."""

    def __init__(self, directory: Path, *, read_only: bool = False) -> None:
        from web3 import Web3

        self.directory = Path(directory)
        self.read_only = read_only
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.w3: Web3 = Web3()
        self._lock = threading.RLock()
        self._replayed = 0  # journal lines applied to the in-memory chain
        self._journal_size = -1
        self._last_hash: str | None = None
        self.contract_address: str | None = None
        self._reset()
        with self._file_lock(exclusive=not read_only):
            self._sync_locked()
            if self.contract_address is None and not read_only:
                self._deploy_locked()

    # --- journal and replay ---

    @property
    def journal_path(self) -> Path:
        return self.directory / JOURNAL

    @contextlib.contextmanager
    def _file_lock(self, *, exclusive: bool) -> Iterator[None]:
        with self._lock:
            if self.read_only and not (self.directory / LOCK).exists():
                yield
                return
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _reset(self) -> None:
        from eth_tester import EthereumTester
        from web3.providers.eth_tester import EthereumTesterProvider

        backend_cls = _backend_class()
        params = backend_cls.generate_genesis_params(
            overrides={"timestamp": GENESIS_TIMESTAMP, "gas_limit": 30_000_000}
        )
        self.tester = EthereumTester(
            backend_cls(genesis_parameters=params), auto_mine_transactions=False
        )
        self.w3.provider = EthereumTesterProvider(self.tester)
        self._replayed = 0
        self._last_hash = None
        self.contract_address = None

    def _read_journal(self) -> list[dict[str, Any]]:
        try:
            text = self.journal_path.read_text()
        except FileNotFoundError:
            return []
        lines = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise LedgerConfigError(f"{self.journal_path}: line {i + 1} is not JSON") from None
        return lines

    def sync(self) -> None:
        """Apply journal lines other processes wrote since we last looked."""
        with self._file_lock(exclusive=False):
            self._sync_locked()

    def _sync_locked(self) -> None:
        try:
            size = self.journal_path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size == self._journal_size:
            return
        entries = self._read_journal()
        if len(entries) < self._replayed or (
            self._replayed and entries[self._replayed - 1]["hash"] != self._last_hash
        ):
            self._reset()  # another process reverted the chain: start over
        if self._replayed == 0:
            self._load_state(entries)
        for entry in entries[self._replayed :]:
            self._apply(entry)
        self._journal_size = size

    # --- state snapshots: replay only the journal's tail ---

    @property
    def state_path(self) -> Path:
        return self.directory / STATE

    def _save_state(self) -> None:
        """Write py-evm's whole key-value store (atomically), tagged with the last block."""
        store = self.tester.backend.chain.chaindb.db.wrapped_db.kv_store
        header = json.dumps({"blocks": self._replayed, "hash": self._last_hash}).encode()
        tmp = self.state_path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(header + b"\n")
            for key, value in store.items():
                f.write(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def _load_state(self, entries: list[dict[str, Any]]) -> None:
        """Start from the saved state when it matches the journal; else replay it all."""
        from eth.db.atomic import AtomicDB
        from eth.db.backends.memory import MemoryDB

        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            head, _, body = data.partition(b"\n")
            meta = json.loads(head)
            blocks, block_hash = int(meta["blocks"]), str(meta["hash"])
            if not 0 < blocks <= len(entries) or entries[blocks - 1]["hash"] != block_hash:
                return  # written before a revert, or for another journal
            store: dict[bytes, bytes] = {}
            view, i = memoryview(body), 0
            while i < len(view):
                n = int.from_bytes(view[i : i + 4], "big")
                key = bytes(view[i + 4 : i + 4 + n])
                i += 4 + n
                n = int.from_bytes(view[i : i + 4], "big")
                store[key] = bytes(view[i + 4 : i + 4 + n])
                i += 4 + n
            backend = self.tester.backend
            backend.chain = type(backend.chain)(AtomicDB(MemoryDB(store)))
            if "0x" + bytes(self.w3.eth.get_block("latest")["hash"]).hex() != block_hash:
                raise ValueError("the saved state's head is not its block")
        except Exception:
            self._reset()  # a damaged state file costs a full replay, nothing else
            return
        self._replayed, self._last_hash = blocks, block_hash
        self._find_contract(entries[0])

    def _apply(self, entry: dict[str, Any]) -> None:
        txs = [str(raw) for raw in entry.get("txs", [])]
        block_hash = self._mine(txs, int(entry["timestamp"]))
        if block_hash != entry["hash"]:
            raise LedgerConfigError(
                f"{self.journal_path}: block {entry['number']} replays to {block_hash}, "
                f"not {entry['hash']} (was the journal written by another py-evm version?)"
            )
        self._replayed += 1
        self._last_hash = block_hash
        if self.contract_address is None:
            self._find_contract(entry)

    def _find_contract(self, entry: dict[str, Any]) -> None:
        """The anchor contract is what the first transaction of the journal created."""
        txs = entry.get("txs") or []
        if txs:
            receipt = self.w3.eth.get_transaction_receipt(self.w3.keccak(hexstr=txs[0]))
            if receipt["contractAddress"]:
                self.contract_address = str(receipt["contractAddress"]).lower()

    def _mine(self, raw_txs: list[str], timestamp: int) -> str:
        for raw in raw_txs:
            self.w3.eth.send_raw_transaction(raw)  # type: ignore[arg-type]
        self.tester.backend.next_timestamp = timestamp
        (block_hash,) = self.tester.mine_blocks(1)
        return "0x" + bytes.fromhex(block_hash[2:]).hex()

    def _append_block(self, raw_txs: list[str]) -> str:
        """Mine a block of these transactions now and journal it (caller holds the lock)."""
        if self.read_only:
            raise LedgerConfigError("this embedded chain was opened read-only")
        head = self.w3.eth.get_block("latest")
        timestamp = max(int(time.time()), int(head["timestamp"]) + 1)
        block_hash = self._mine(raw_txs, timestamp)
        number = int(self.w3.eth.block_number)
        line = json.dumps(
            {"number": number, "timestamp": timestamp, "txs": raw_txs, "hash": block_hash}
        )
        with self.journal_path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._replayed += 1
        self._last_hash = block_hash
        self._journal_size = self.journal_path.stat().st_size
        if self._replayed % STATE_EVERY == 0:
            self._save_state()
        return block_hash

    def _deploy_locked(self) -> None:
        from eth_account import Account

        from chain.contract import artifact

        account = Account.from_key(DEV_PRIVATE_KEY)
        art = artifact()
        tx = {
            "from": account.address,
            "nonce": self.w3.eth.get_transaction_count(account.address),
            "gas": 300_000,
            "chainId": self.w3.eth.chain_id,
            "data": art["bytecode"],
            "maxFeePerGas": 2 * int(self.w3.eth.get_block("latest")["baseFeePerGas"]) + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        raw = "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()
        self._append_block([raw])
        receipt = self.w3.eth.get_transaction_receipt(self.w3.keccak(hexstr=raw))
        self.contract_address = str(receipt["contractAddress"]).lower()

    # --- writing ---

    def submit(self, raw_transaction: str) -> str:
        """Mine a block holding this one transaction; returns the transaction hash."""
        with self._file_lock(exclusive=True):
            self._sync_locked()
            raw = raw_transaction.lower()
            # A refused transaction raises in send_raw_transaction, before anything is
            # journaled.
            self._append_block([raw])
            return "0x" + bytes(self.w3.keccak(hexstr=raw)).hex()

    def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (confirmations; real chains make these on their own)."""
        with self._file_lock(exclusive=True):
            self._sync_locked()
            for _ in range(blocks):
                self._append_block([])

    def snapshot(self) -> Snapshot:
        with self._file_lock(exclusive=True):
            self._sync_locked()
            return Snapshot(self.tester.take_snapshot(), self._replayed)

    def revert(self, snapshot: Snapshot) -> None:
        """Drop every block after the snapshot, here and in the journal (a reorg)."""
        with self._file_lock(exclusive=True):
            self._sync_locked()
            self.tester.revert_to_snapshot(snapshot.tester_id)
            entries = self._read_journal()[: snapshot.blocks]
            tmp = self.journal_path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
            os.replace(tmp, self.journal_path)
            self.state_path.unlink(missing_ok=True)  # it may describe a dropped block
            self._replayed = len(entries)
            self._last_hash = entries[-1]["hash"] if entries else None
            self._journal_size = self.journal_path.stat().st_size


class EmbeddedLedger(Web3Ledger):
    """The anchor contract on the embedded chain: each transaction gets its own block."""

    def __init__(self, chain: EmbeddedChain, *, gas: GasSettings | None = None) -> None:
        from eth_account import Account

        if chain.contract_address is None:
            raise LedgerConfigError(
                f"no anchor contract in the embedded chain at {chain.directory}"
            )
        account = None if chain.read_only else Account.from_key(DEV_PRIVATE_KEY)
        super().__init__(
            chain.w3,
            chain.contract_address,
            account=account,
            gas=gas or GasSettings(priority_fee_wei=10**9),
        )
        self.chain = chain

    @classmethod
    def open(cls, directory: Path, *, read_only: bool = False) -> EmbeddedLedger:
        return cls(EmbeddedChain(directory, read_only=read_only))

    def head(self) -> int:
        self.chain.sync()
        return super().head()

    def block(self, number: int) -> BlockInfo | None:
        self.chain.sync()
        return super().block(number)

    def inclusion(self, transaction_hash: str) -> Inclusion | None:
        self.chain.sync()
        return super().inclusion(transaction_hash)

    def anchored_logs(self, block_number: int) -> list[AnchoredLog]:
        self.chain.sync()
        return super().anchored_logs(block_number)

    def advance(self) -> None:
        self.chain.mine(1)

    def _submit(self, raw_transaction: str) -> str:
        tx_hash: str = self._call(lambda: self.chain.submit(raw_transaction))
        return tx_hash
