"""Signal extractors: pure functions from bytes to hashes and scores (usable on their own)."""
