"""Errors of the provenance library (``chain`` never imports the service's hierarchy)."""

from __future__ import annotations

__all__ = [
    "ChainError",
    "ContractNotDeployed",
    "InvalidProof",
    "InvalidReceipt",
    "LedgerConfigError",
    "LedgerUnavailable",
    "TransactionFailed",
]


class ChainError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidProof(ChainError):
    """A Merkle proof is malformed or does not lead to the claimed root."""


class InvalidReceipt(ChainError):
    """A receipt is malformed: missing fields, wrong types, non-canonical values."""


class LedgerConfigError(ChainError):
    """The ledger cannot be used as configured (no key, bad URL, no contract)."""


class LedgerUnavailable(ChainError):
    """The node did not answer, or answered with an error; may succeed on retry."""


class ContractNotDeployed(LedgerConfigError):
    """No anchor contract code at the configured address."""


class TransactionFailed(ChainError):
    """A transaction was mined but reverted."""
