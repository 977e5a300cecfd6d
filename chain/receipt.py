"""Provenance receipts: a leaf, its inclusion proof, and where the root was anchored.

A receipt is checked offline (the proof leads from the leaf to the root) without trusting
anyone, and online (``chain.verify``) against any node of the chain: the transaction's log
carries that root and the proof's tree size, in the block the receipt names, deep enough.
Every value has exactly one accepted spelling (lowercase hex, RFC 3339 UTC), so a changed
byte is never silently read as the same receipt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from chain.errors import InvalidProof, InvalidReceipt
from chain.leaf import Leaf, check_time
from chain.merkle import InclusionProof, root_from_proof

__all__ = ["AnchorRecord", "Check", "ProofRecord", "Receipt", "parse_receipt", "verify_offline"]

RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 1 << 20

Hash0x = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
Address0x = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{40}$")]


class ProofRecord(BaseModel):
    """An RFC 9162 inclusion proof: sibling hashes bottom-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    path: tuple[Hash0x, ...] = Field(max_length=64)

    def to_proof(self) -> InclusionProof:
        return InclusionProof(
            self.leaf_index, self.tree_size, tuple(bytes.fromhex(h[2:]) for h in self.path)
        )


class AnchorRecord(BaseModel):
    """The transaction that published the root: chain, contract, block and log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: int = Field(ge=1)
    contract: Address0x
    transaction_hash: Hash0x
    block_number: int = Field(ge=0)
    block_hash: Hash0x
    log_index: int = Field(ge=0)
    anchored_at: str

    @field_validator("anchored_at")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        return check_time(value)


class Receipt(BaseModel):
    """Everything a third party needs to check that this leaf was anchored, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    leaf: Leaf
    proof: ProofRecord
    root: Hash0x
    anchor: AnchorRecord

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Check:
    """The outcome of a verification: valid or not, and the reason when not."""

    valid: bool
    reason: str
    confirmations: int | None = None

    @classmethod
    def ok(cls, reason: str = "valid", confirmations: int | None = None) -> Check:
        return cls(True, reason, confirmations)

    @classmethod
    def fail(cls, reason: str, confirmations: int | None = None) -> Check:
        return cls(False, reason, confirmations)


def parse_receipt(data: bytes | str) -> Receipt:
    """Parse and validate a receipt's JSON; InvalidReceipt names the first problem."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise InvalidReceipt(f"a receipt is at most {MAX_RECEIPT_BYTES} bytes")
    try:
        return Receipt.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "receipt"
        raise InvalidReceipt(f"{where}: {err['msg']}") from None


def verify_offline(receipt: Receipt) -> Check:
    """Does the proof lead from the leaf's hash to the receipt's root?"""
    try:
        root = root_from_proof(receipt.leaf.hash(), receipt.proof.to_proof())
    except InvalidProof as exc:
        return Check.fail(f"proof: {exc}")
    if root.hex() != receipt.root[2:]:
        return Check.fail(
            "the proof does not lead from the leaf to the root "
            "(the leaf, its salt, the proof or the root was changed)"
        )
    return Check.ok("the proof leads from the leaf to the root")
