"""Ledger clients: publish Merkle roots to the anchor contract and read them back.

``Web3Ledger`` speaks to any EVM node through a web3.py provider: JSON-RPC over HTTP for
real chains (``connect_rpc``), or the embedded eth-tester chain (``chain.embedded``). Both
take the same path: transactions are signed here with a local key and sent raw, so the
node never holds the key. web3 is imported inside functions: importing ``chain`` is cheap.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chain.contract import ANCHORED_EVENT, artifact
from chain.errors import (
    ChainError,
    ContractNotDeployed,
    LedgerConfigError,
    LedgerUnavailable,
    TransactionFailed,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

__all__ = [
    "AnchoredLog",
    "BlockInfo",
    "GasSettings",
    "Inclusion",
    "Ledger",
    "NonceManager",
    "SentAnchor",
    "Web3Ledger",
    "connect_rpc",
    "deploy_anchor_contract",
    "load_private_key",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GasSettings:
    """Gas for anchor transactions. Unset fees follow the node (EIP-1559: twice the base fee
    plus the suggested tip), capped by ``max_fee_wei`` when set."""

    gas_limit: int = 100_000
    max_fee_wei: int | None = None
    priority_fee_wei: int | None = None


@dataclass(frozen=True)
class SentAnchor:
    """A signed anchor transaction handed to the node (kept raw, to rebroadcast it)."""

    transaction_hash: str
    nonce: int
    raw_transaction: str


@dataclass(frozen=True)
class BlockInfo:
    number: int
    hash: str
    timestamp: int


@dataclass(frozen=True)
class AnchoredLog:
    """One ``Anchored(root, leafCount)`` log of the anchor contract."""

    root: str
    leaf_count: int
    transaction_hash: str
    block_number: int
    block_hash: str
    log_index: int


@dataclass(frozen=True)
class Inclusion:
    """Where a mined anchor transaction sits, from its receipt."""

    transaction_hash: str
    block_number: int
    block_hash: str
    succeeded: bool
    gas_used: int
    logs: tuple[AnchoredLog, ...]


class Ledger(Protocol):
    """What the anchoring job and the verifier need from a chain."""

    @property
    def chain_id(self) -> int: ...

    @property
    def contract(self) -> str: ...

    @property
    def signer(self) -> str | None: ...

    def sign_anchor(self, root: bytes, leaf_count: int) -> SentAnchor: ...

    def broadcast(self, raw_transaction: str) -> bool: ...

    def reset_nonces(self) -> None: ...

    def inclusion(self, transaction_hash: str) -> Inclusion | None: ...

    def head(self) -> int: ...

    def block(self, number: int) -> BlockInfo | None: ...

    def anchored_logs(self, block_number: int) -> list[AnchoredLog]: ...

    def advance(self) -> None: ...


def _hex(value: Any) -> str:
    """Lowercase 0x hex of bytes or a hex string (web3 returns HexBytes or str)."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text


def load_private_key(*, key_file: Path | None = None, env_var: str | None = None) -> str:
    """The signing key from a file (first line) or an environment variable; never logged."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError):
            raise LedgerConfigError(f"cannot read a private key from {key_file}") from None
    elif env_var is not None:
        key = os.environ.get(env_var, "").strip()
        if not key:
            raise LedgerConfigError(f"environment variable {env_var} holds no private key")
    else:
        raise LedgerConfigError("no private key: set a key file or an environment variable")
    body = key[2:] if key.startswith("0x") else key
    if len(body) != 64 or any(c not in "0123456789abcdefABCDEF" for c in body):
        # Never echo the value: it may be a real key with a typo.
        raise LedgerConfigError("the private key is not 32 bytes of hex")
    return "0x" + body.lower()


class NonceManager:
    """Next nonce for one signer: the node's pending count, or higher if we sent more since
    (nodes may lag in counting our own pending transactions)."""

    def __init__(self) -> None:
        self._next: int | None = None
        self._lock = threading.Lock()

    def take(self, pending_on_node: int) -> int:
        with self._lock:
            nonce = max(pending_on_node, self._next or 0)
            self._next = nonce + 1
            return nonce

    def reset(self) -> None:
        with self._lock:
            self._next = None


class Web3Ledger:
    """The anchor contract on one chain, through a web3.py instance."""

    def __init__(
        self,
        w3: Web3,
        contract: str,
        *,
        account: LocalAccount | None = None,
        gas: GasSettings | None = None,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.gas = gas or GasSettings()
        self.nonces = NonceManager()
        self._contract_address = _hex(contract)
        self._chain_id: int | None = None
        self._anchor = w3.eth.contract(
            address=w3.to_checksum_address(self._contract_address), abi=artifact()["abi"]
        )

    # --- reading ---

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._call(lambda: self.w3.eth.chain_id))
        return self._chain_id

    @property
    def contract(self) -> str:
        return self._contract_address

    def check_contract(self) -> None:
        """Raise ContractNotDeployed unless the anchor contract's code is at the address."""
        code = self._call(lambda: self.w3.eth.get_code(self._anchor.address))
        if _hex(code) != artifact()["deployedBytecode"].lower():
            raise ContractNotDeployed(
                f"no anchor contract at {self._contract_address} on chain {self.chain_id}"
            )

    def head(self) -> int:
        return int(self._call(lambda: self.w3.eth.block_number))

    def block(self, number: int) -> BlockInfo | None:
        from web3.exceptions import BlockNotFound

        try:
            b = self._call(lambda: self.w3.eth.get_block(number), passthrough=(BlockNotFound,))
        except BlockNotFound:
            return None
        return BlockInfo(int(b["number"]), _hex(b["hash"]), int(b["timestamp"]))

    def inclusion(self, transaction_hash: str) -> Inclusion | None:
        from web3.exceptions import TransactionNotFound

        try:
            r = self._call(
                lambda: self.w3.eth.get_transaction_receipt(transaction_hash),  # type: ignore[arg-type]
                passthrough=(TransactionNotFound,),
            )
        except TransactionNotFound:
            return None
        if r is None or r.get("blockNumber") is None:
            return None
        logs = tuple(self._parse_log(entry) for entry in r["logs"] if self._is_anchor_log(entry))
        return Inclusion(
            transaction_hash=_hex(r["transactionHash"]),
            block_number=int(r["blockNumber"]),
            block_hash=_hex(r["blockHash"]),
            succeeded=int(r["status"]) == 1,
            gas_used=int(r["gasUsed"]),
            logs=logs,
        )

    def anchored_logs(self, block_number: int) -> list[AnchoredLog]:
        """The contract's Anchored logs in one block (never a full-range scan)."""
        entries = self._call(
            lambda: self.w3.eth.get_logs(
                {
                    "fromBlock": block_number,
                    "toBlock": block_number,
                    "address": self._anchor.address,
                    "topics": [ANCHORED_EVENT],
                }
            )
        )
        return [self._parse_log(e) for e in entries if self._is_anchor_log(e)]

    def _is_anchor_log(self, entry: Any) -> bool:
        topics = entry.get("topics") or []
        return (
            _hex(entry["address"]) == self._contract_address
            and len(topics) == 2
            and _hex(topics[0]) == ANCHORED_EVENT
        )

    @staticmethod
    def _parse_log(entry: Any) -> AnchoredLog:
        data = entry["data"]
        raw = bytes(data) if isinstance(data, bytes | bytearray) else bytes.fromhex(_hex(data)[2:])
        return AnchoredLog(
            root=_hex(entry["topics"][1]),
            leaf_count=int.from_bytes(raw[:32], "big"),
            transaction_hash=_hex(entry["transactionHash"]),
            block_number=int(entry["blockNumber"]),
            block_hash=_hex(entry["blockHash"]),
            log_index=int(entry["logIndex"]),
        )

    # --- writing ---

    @property
    def signer(self) -> str | None:
        return self.account.address.lower() if self.account is not None else None

    def sign_anchor(self, root: bytes, leaf_count: int) -> SentAnchor:
        """Sign ``anchor(root, leafCount)`` with the next nonce, without sending it (callers
        store it first, so a crash never leads to a second transaction for one root)."""
        if len(root) != 32:
            raise ValueError("a root is 32 bytes")
        if not 1 <= leaf_count < 2**256:
            raise ValueError("leaf_count must be positive")
        account = self._signer()
        pending = int(
            self._call(lambda: self.w3.eth.get_transaction_count(account.address, "pending"))
        )
        nonce = self.nonces.take(pending)
        params: Any = {
            "from": account.address,
            "nonce": nonce,
            "gas": self.gas.gas_limit,
            "chainId": self.chain_id,
            **self._fees(),
        }
        tx: Any = self._anchor.functions.anchor(root, leaf_count).build_transaction(params)
        signed = account.sign_transaction(tx)
        return SentAnchor(
            transaction_hash=_hex(signed.hash),
            nonce=nonce,
            raw_transaction=_hex(signed.raw_transaction),
        )

    def broadcast(self, raw_transaction: str) -> bool:
        """Hand a signed transaction to the node (again, after a reorg dropped it). False
        when the node refuses it for good (its nonce is used): sign a new one then."""
        try:
            self._submit(raw_transaction)
        except LedgerUnavailable as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text:
                return True
            if _is_rejection(exc):
                self.nonces.reset()
                return False
            raise
        return True

    def send_anchor(self, root: bytes, leaf_count: int) -> SentAnchor:
        """Sign and send in one step (the job stores between the two; tools need not)."""
        sent = self.sign_anchor(root, leaf_count)
        if not self.broadcast(sent.raw_transaction):
            raise LedgerUnavailable(f"the node refused transaction {sent.transaction_hash}")
        return sent

    def reset_nonces(self) -> None:
        self.nonces.reset()

    def deploy(self) -> str:
        """Deploy the anchor contract from the signer; returns its address."""
        account = self._signer()
        art = artifact()
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        pending = int(
            self._call(lambda: self.w3.eth.get_transaction_count(account.address, "pending"))
        )
        params: Any = {
            "from": account.address,
            "nonce": self.nonces.take(pending),
            "gas": 300_000,
            "chainId": self.chain_id,
            **self._fees(),
        }
        tx: Any = factory.constructor().build_transaction(params)
        tx_hash = self._submit(_hex(account.sign_transaction(tx).raw_transaction))
        self.advance()
        receipt = self._call(lambda: self.w3.eth.wait_for_transaction_receipt(tx_hash, 120))  # type: ignore[arg-type]
        if int(receipt["status"]) != 1:
            raise TransactionFailed(f"contract deployment {tx_hash} reverted")
        return _hex(receipt["contractAddress"])

    def advance(self) -> None:
        """Real chains make blocks on their own; the embedded chain mines here."""

    def _submit(self, raw_transaction: str) -> str:
        return _hex(
            self._call(lambda: self.w3.eth.send_raw_transaction(raw_transaction))  # type: ignore[arg-type]
        )

    def _signer(self) -> LocalAccount:
        if self.account is None:
            raise LedgerConfigError("this ledger has no signing key: it can only read")
        return self.account

    def _fees(self) -> dict[str, int]:
        tip = self.gas.priority_fee_wei
        if tip is None:
            tip = int(self._call(lambda: self.w3.eth.max_priority_fee))
        base = int(self._call(lambda: self.w3.eth.get_block("latest")).get("baseFeePerGas", 0))
        max_fee = 2 * base + tip
        if self.gas.max_fee_wei is not None:
            max_fee = min(max_fee, self.gas.max_fee_wei)
            tip = min(tip, max_fee)
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}

    def _call(self, fn: Any, passthrough: tuple[type[BaseException], ...] = ()) -> Any:
        """Run one node call; node and transport errors become LedgerUnavailable."""
        try:
            return fn()
        except passthrough:
            raise
        except ChainError:
            raise
        except Exception as exc:
            raise LedgerUnavailable(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _is_rejection(exc: LedgerUnavailable) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("nonce", "replacement", "invalid"))


def connect_rpc(
    url: str,
    contract: str,
    *,
    private_key: str | None = None,
    gas: GasSettings | None = None,
    timeout_s: float = 10.0,
) -> Web3Ledger:
    """A ledger on any EVM node over JSON-RPC (HTTP). Without a key it can only read."""
    from eth_account import Account
    from web3 import Web3

    if not url.startswith(("http://", "https://")):
        raise LedgerConfigError(f"the RPC URL must be http:// or https://, got {url[:40]!r}")
    if not _is_address(contract):
        raise LedgerConfigError("the anchor contract must be a 0x address of 40 hex digits")
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    account = Account.from_key(private_key) if private_key else None
    return Web3Ledger(w3, contract, account=account, gas=gas)


def _is_address(value: str) -> bool:
    body = value[2:] if value.startswith("0x") else ""
    return len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body)


def deploy_anchor_contract(
    url: str, *, private_key: str, gas: GasSettings | None = None, timeout_s: float = 10.0
) -> str:
    """Deploy the committed anchor contract on a JSON-RPC node; returns its address."""
    placeholder = "0x" + "00" * 20  # no contract yet: only the signer and the node are used
    ledger = connect_rpc(url, placeholder, private_key=private_key, gas=gas, timeout_s=timeout_s)
    return ledger.deploy()
