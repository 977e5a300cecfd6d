"""Provenance primitives: Merkle trees, receipts and ledger clients (usable on their own)."""
