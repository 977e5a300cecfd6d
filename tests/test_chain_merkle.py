"""Merkle trees: RFC 6962 roots and paths, RFC 9162 verification, tampering."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.errors import InvalidProof
from chain.merkle import (
    InclusionProof,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_proof,
    verify_inclusion,
)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written recursively as the RFC does."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = _split(len(leaves))
    return node_hash(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


def rfc6962_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962 section 2.1.1."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*rfc6962_path(m, leaves[:k]), rfc6962_root(leaves[k:])]
    return [*rfc6962_path(m - k, leaves[k:]), rfc6962_root(leaves[:k])]


def test_empty_tree_hash_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_odd_node_is_promoted_not_duplicated() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert MerkleTree([a, b, c]).root == node_hash(node_hash(a, b), c)
    # Duplicating the last leaf (Bitcoin's rule) would give these two lists one root.
    assert MerkleTree([a, b, c]).root != MerkleTree([a, b, c, c]).root


def test_single_leaf() -> None:
    tree = MerkleTree.from_leaves([b"only"])
    assert tree.root == leaf_hash(b"only")
    proof = tree.proof(0)
    assert proof.path == ()
    verify_inclusion(leaf_hash(b"only"), proof, tree.root)


@pytest.mark.parametrize("n", range(1, 40))
def test_matches_rfc6962_for_every_leaf(n: int) -> None:
    leaves = [f"leaf-{i}".encode() for i in range(n)]
    tree = MerkleTree.from_leaves(leaves)
    assert tree.root == rfc6962_root(leaves)
    for m in range(n):
        proof = tree.proof(m)
        assert list(proof.path) == rfc6962_path(m, leaves)
        verify_inclusion(leaf_hash(leaves[m]), proof, tree.root)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=150), st.data())
def test_any_proof_verifies_and_any_flipped_byte_fails(leaves: list[bytes], data) -> None:  # type: ignore[no-untyped-def]
    tree = MerkleTree.from_leaves(leaves)
    m = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.proof(m)
    leaf = leaf_hash(leaves[m])
    verify_inclusion(leaf, proof, tree.root)

    # A flipped byte anywhere in the leaf hash, the root or a path node fails.
    blob = leaf + tree.root + b"".join(proof.path)
    pos = data.draw(st.integers(0, len(blob) - 1))
    bit = 1 << data.draw(st.integers(0, 7))
    bad = bytearray(blob)
    bad[pos] ^= bit
    bad_leaf, bad_root = bytes(bad[:32]), bytes(bad[32:64])
    bad_path = tuple(bytes(bad[64 + 32 * i : 96 + 32 * i]) for i in range(len(proof.path)))
    with pytest.raises(InvalidProof):
        verify_inclusion(bad_leaf, InclusionProof(m, len(leaves), bad_path), bad_root)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 300), st.data())
def test_wrong_index_fails(n: int, data) -> None:  # type: ignore[no-untyped-def]
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    tree = MerkleTree.from_leaves(leaves)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.proof(m)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != m))
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(leaves[m]), InclusionProof(other, n, proof.path), tree.root)


def test_tree_size_is_not_bound_by_the_root_alone() -> None:
    # Why receipts check the proof's tree size against the anchored log's leafCount online:
    # the leftmost path is the same in every tree of 65..128 leaves.
    leaves = [i.to_bytes(4, "big") for i in range(65)]
    tree = MerkleTree.from_leaves(leaves)
    proof = tree.proof(0)
    verify_inclusion(leaf_hash(leaves[0]), InclusionProof(0, 100, proof.path), tree.root)


def test_malformed_proofs_name_the_problem() -> None:
    tree = MerkleTree.from_leaves([b"a", b"b", b"c"])
    leaf = leaf_hash(b"a")
    with pytest.raises(InvalidProof, match="outside"):
        root_from_proof(leaf, InclusionProof(3, 3, tree.proof(0).path))
    with pytest.raises(InvalidProof, match="longer"):
        root_from_proof(leaf, InclusionProof(0, 3, (*tree.proof(0).path, b"x" * 32)))
    with pytest.raises(InvalidProof, match="shorter"):
        root_from_proof(leaf, InclusionProof(0, 3, tree.proof(0).path[:1]))
    with pytest.raises(InvalidProof, match="32 bytes"):
        root_from_proof(leaf, InclusionProof(0, 3, (b"x",)))
    with pytest.raises(ValueError):
        MerkleTree([])
    with pytest.raises(IndexError):
        tree.proof(5)
