"""Receipt verification against a chain: the offline proof, then the anchoring log."""

from __future__ import annotations

from datetime import UTC, datetime

from chain.errors import ChainError
from chain.ledger import Ledger
from chain.receipt import Check, Receipt, verify_offline

__all__ = ["verify_on_chain"]


def verify_on_chain(receipt: Receipt, ledger: Ledger, *, min_confirmations: int = 1) -> Check:
    """Offline proof, then: the transaction is in the named block of this chain, its log at
    the named index carries the root and the tree size, at the receipt's time, deep enough."""
    offline = verify_offline(receipt)
    if not offline.valid:
        return offline
    a = receipt.anchor
    try:
        if ledger.chain_id != a.chain_id:
            return Check.fail(
                f"the node is on chain {ledger.chain_id}, the receipt on {a.chain_id}"
            )
        if ledger.contract != a.contract:
            return Check.fail(f"the ledger reads contract {ledger.contract}, not {a.contract}")
        inclusion = ledger.inclusion(a.transaction_hash)
        if inclusion is None:
            return Check.fail(f"transaction {a.transaction_hash} is not on the chain")
        if not inclusion.succeeded:
            return Check.fail(f"transaction {a.transaction_hash} reverted")
        if (inclusion.block_number, inclusion.block_hash) != (a.block_number, a.block_hash):
            return Check.fail(
                f"the transaction is in block {inclusion.block_number} "
                f"({inclusion.block_hash}), not {a.block_number} ({a.block_hash})"
            )
        log = next((e for e in inclusion.logs if e.log_index == a.log_index), None)
        if log is None:
            return Check.fail(f"the transaction has no Anchored log at index {a.log_index}")
        if log.root != receipt.root:
            return Check.fail(f"the transaction anchored root {log.root}, not {receipt.root}")
        if log.leaf_count != receipt.proof.tree_size:
            return Check.fail(
                f"the anchored batch has {log.leaf_count} leaves, the proof says "
                f"{receipt.proof.tree_size}"
            )
        block = ledger.block(a.block_number)
        if block is None or block.hash != a.block_hash:
            return Check.fail(f"block {a.block_number} is not {a.block_hash} on this chain")
        at = datetime.fromtimestamp(block.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if at != a.anchored_at:
            return Check.fail(f"block {a.block_number} was made at {at}, not {a.anchored_at}")
        confirmations = ledger.head() - a.block_number + 1
    except ChainError as exc:
        return Check.fail(f"cannot check on the chain: {exc}")
    if confirmations < min_confirmations:
        return Check.fail(
            f"only {confirmations} confirmations, {min_confirmations} required", confirmations
        )
    return Check.ok(
        f"anchored in block {a.block_number} at {a.anchored_at}, {confirmations} confirmations",
        confirmations,
    )
