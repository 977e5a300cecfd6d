"""Merkle trees as in RFC 6962 / RFC 9162: SHA-256, leaf prefix 0x00, node prefix 0x01.

A level with an odd number of nodes promotes its last node unchanged (never duplicated,
which would let two different leaf lists share a root: the Bitcoin CVE-2012-2459 trap).
This builds the same tree as RFC 6962's recursive split at the largest power of two, so
proofs are RFC 9162 inclusion proofs: (leaf index, tree size, sibling hashes bottom-up).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from chain.errors import InvalidProof

__all__ = [
    "HASH_SIZE",
    "InclusionProof",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "root_from_proof",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): a leaf can never be confused with an inner node."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE + left + right).digest()


@dataclass(frozen=True)
class InclusionProof:
    """Where a leaf sits (index of tree_size) and its sibling hashes, bottom-up."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]


class MerkleTree:
    """Every level of the tree over the given leaf hashes, kept for proof extraction."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        for h in leaf_hashes:
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hashes are {HASH_SIZE} bytes, got {len(h)}")
        levels: list[list[bytes]] = [list(leaf_hashes)]
        sha = hashlib.sha256
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [
                sha(_NODE + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)
            ]
            if len(below) % 2:
                above.append(below[-1])
            levels.append(above)
        self._levels = levels

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """A tree over raw leaf data (each hashed with the leaf prefix)."""
        return cls([leaf_hash(data) for data in leaves])

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    def proof(self, index: int) -> InclusionProof:
        """The inclusion proof of the leaf at ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is outside a tree of {self.size}")
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            # else: the node is the promoted last one of an odd level; no hash at this level
            i >>= 1
        return InclusionProof(index, self.size, tuple(path))


def root_from_proof(leaf: bytes, proof: InclusionProof) -> bytes:
    """The root that ``proof`` leads to from the leaf hash (RFC 9162 section 2.1.3.2)."""
    if proof.tree_size < 1:
        raise InvalidProof("tree size must be at least 1")
    if not 0 <= proof.leaf_index < proof.tree_size:
        raise InvalidProof(
            f"leaf index {proof.leaf_index} is outside a tree of {proof.tree_size} leaves"
        )
    fn, sn = proof.leaf_index, proof.tree_size - 1
    r = leaf
    sha = hashlib.sha256
    for p in proof.path:
        if len(p) != HASH_SIZE:
            raise InvalidProof(f"path hashes are {HASH_SIZE} bytes, got {len(p)}")
        if sn == 0:
            raise InvalidProof("the path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = sha(_NODE + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the path is shorter than the tree is deep")
    return r


def verify_inclusion(leaf: bytes, proof: InclusionProof, root: bytes) -> None:
    """Raise InvalidProof unless ``proof`` leads from the leaf hash to ``root``."""
    if root_from_proof(leaf, proof) != root:
        raise InvalidProof("the proof does not lead to the root")
