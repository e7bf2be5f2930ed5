"""Known answers from the Certificate Transparency corpus (../shared/notes/rfc9162-vectors.md)
and exhaustive positive/negative proof checks for every tree size 1..8."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compliance.errors import InvalidProof
from compliance.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
PUBLISHED_CONSISTENCY = {
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
TREE = MerkleTree(leaf_hash(x) for x in LEAVES)
SIZES = range(1, 9)
# Proof *shapes* depend only on sizes; a larger tree tells how long a genuine proof for a
# wrong size would be.
SHAPES = MerkleTree(leaf_hash(i.to_bytes(2, "big")) for i in range(40))


def _flip_bit(value: bytes, bit: int = 0) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


@pytest.mark.parametrize("n", range(9))
def test_roots_match_published_values(n: int) -> None:
    assert TREE.root(n) == ROOTS[n]
    assert root_hash([leaf_hash(x) for x in LEAVES[:n]]) == ROOTS[n]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == ROOTS[0]
    assert MerkleTree().root() == EMPTY_ROOT


def test_incremental_tree_agrees_with_reference_recursion() -> None:
    def mth(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1 << ((len(hashes) - 1).bit_length() - 1)
        from compliance.merkle import node_hash

        return node_hash(mth(hashes[:k]), mth(hashes[k:]))

    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    tree = MerkleTree(hashes)
    for n in range(1, 71):
        assert tree.root(n) == mth(hashes[:n])


@pytest.mark.parametrize(("old", "new"), sorted(PUBLISHED_CONSISTENCY))
def test_published_consistency_proofs(old: int, new: int) -> None:
    published = [bytes.fromhex(h) for h in PUBLISHED_CONSISTENCY[(old, new)]]
    assert TREE.consistency_proof(old, new) == published
    verify_consistency(old, new, ROOTS[old], ROOTS[new], published)


def test_trivial_consistency_proofs_are_empty() -> None:
    for n in range(9):
        assert TREE.consistency_proof(n, n) == []
        assert TREE.consistency_proof(0, n) == []
        verify_consistency(n, n, ROOTS[n], ROOTS[n], [])
        verify_consistency(0, n, EMPTY_ROOT, ROOTS[n], [])


@pytest.mark.parametrize("size", SIZES)
def test_every_inclusion_proof_verifies(size: int) -> None:
    for index in range(size):
        proof = TREE.inclusion_proof(index, size)
        verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size])


@pytest.mark.parametrize("size", SIZES)
def test_every_consistency_proof_verifies(size: int) -> None:
    for old in range(1, size + 1):
        proof = TREE.consistency_proof(old, size)
        verify_consistency(old, size, ROOTS[old], ROOTS[size], proof)


def _inclusion_corruptions(size: int, index: int):  # type: ignore[no-untyped-def]
    """Every corruption the transparency-dev test data applies to an inclusion proof."""
    proof = TREE.inclusion_proof(index, size)
    leaf = leaf_hash(LEAVES[index])
    root = ROOTS[size]
    for position in range(len(proof)):
        for bit in (0, 7):
            bad = list(proof)
            bad[position] = _flip_bit(bad[position], bit)
            yield f"bit {bit} of hash {position} flipped", leaf, index, size, bad, root
    yield "hash appended", leaf, index, size, proof + [ROOTS[1]], root
    yield "empty hash appended", leaf, index, size, proof + [bytes(32)], root
    if proof:
        yield "last hash removed", leaf, index, size, proof[:-1], root
        yield "first hash removed", leaf, index, size, proof[1:], root
    for label, wrong in (("size + 1", size + 1), ("size - 1", size - 1),
                         ("size * 2", size * 2), ("size // 2", size // 2)):
        if index >= wrong:
            yield label, leaf, index, wrong, proof, root
        elif len(SHAPES.inclusion_proof(index, wrong)) != len(proof):
            yield label, leaf, index, wrong, proof, root
        # Otherwise the wrong size gives this index a path of the same shape, so no
        # verifier can tell the sizes apart (see test_wrong_size_with_same_path_shape).
    yield "index = size", leaf, size, size, proof, root
    yield "index + size", leaf, index + size, size, proof, root
    yield "leaf bit flipped", _flip_bit(leaf), index, size, proof, root
    yield "wrong root", leaf, index, size, proof, _flip_bit(root)
    yield "root of another size", leaf, index, size, proof, ROOTS[size - 1] if size > 1 else ROOTS[2]
    if index + 1 < size:
        yield "index + 1", leaf, index + 1, size, proof, root
    if index > 0:
        yield "index - 1", leaf, index - 1, size, proof, root


@pytest.mark.parametrize("size", SIZES)
def test_corrupted_inclusion_proofs_are_rejected(size: int) -> None:
    for index in range(size):
        for label, leaf, i, n, proof, root in _inclusion_corruptions(size, index):
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, i, n, proof, root)
                pytest.fail(f"accepted inclusion proof ({label}) for index {index} of {size}")


def _consistency_corruptions(old: int, new: int):  # type: ignore[no-untyped-def]
    proof = TREE.consistency_proof(old, new)
    r1, r2 = ROOTS[old], ROOTS[new]
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = _flip_bit(bad[position])
        yield f"hash {position} flipped", old, new, r1, r2, bad
    yield "hash appended", old, new, r1, r2, proof + [ROOTS[1]]
    if proof:
        yield "last hash removed", old, new, r1, r2, proof[:-1]
        yield "first hash removed", old, new, r1, r2, proof[1:]
    yield "roots swapped", old, new, r2, r1, proof
    yield "old root flipped", old, new, _flip_bit(r1), r2, proof
    yield "new root flipped", old, new, r1, _flip_bit(r2), proof
    yield "old size + 1", old + 1, new, r1, r2, proof
    yield "old size - 1", old - 1, new, r1, r2, proof
    for label, wrong in (("new size + 1", new + 1), ("new size - 1", new - 1),
                         ("new size * 2", new * 2)):
        if wrong <= old or len(SHAPES.consistency_proof(old, wrong)) != len(proof):
            yield label, old, wrong, r1, r2, proof
    yield "sizes swapped", new, old, r2, r1, proof


@pytest.mark.parametrize("size", SIZES)
def test_corrupted_consistency_proofs_are_rejected(size: int) -> None:
    for old in range(1, size):
        for label, m, n, r1, r2, proof in _consistency_corruptions(old, size):
            with pytest.raises(InvalidProof):
                verify_consistency(m, n, r1, r2, proof)
                pytest.fail(f"accepted consistency proof ({label}) for {old} → {size}")


def test_wrong_size_with_same_path_shape() -> None:
    """A known limit of every Merkle proof: leaf 0 has a path of the same shape in trees of
    3 and 4 leaves, so a size-3 proof also "verifies" for size 4 against the size-3 root.
    That (size 4, root of 3) pair is not a real tree head; our checkpoints sign size and
    root together, so such a claim can never carry a valid signature."""
    proof = TREE.inclusion_proof(0, 3)
    verify_inclusion(leaf_hash(LEAVES[0]), 0, 4, proof, ROOTS[3])
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(LEAVES[0]), 0, 4, proof, ROOTS[4])


def test_negative_probes_cover_every_kind() -> None:
    labels = {label for size in SIZES for index in range(size)
              for label, *_ in _inclusion_corruptions(size, index)}
    assert {"size + 1", "size - 1", "index = size", "hash appended", "last hash removed",
            "bit 0 of hash 0 flipped", "wrong root"} <= labels
    labels = {label for size in SIZES for old in range(1, size)
              for label, *_ in _consistency_corruptions(old, size)}
    assert {"new size + 1", "new size - 1", "old size + 1", "old size - 1", "roots swapped",
            "hash appended", "last hash removed", "hash 0 flipped"} <= labels


def test_equal_sizes_need_equal_roots_and_empty_proof() -> None:
    with pytest.raises(InvalidProof):
        verify_consistency(4, 4, ROOTS[4], ROOTS[5], [])
    with pytest.raises(InvalidProof):
        verify_consistency(4, 4, ROOTS[4], ROOTS[4], [ROOTS[1]])
    with pytest.raises(InvalidProof):
        verify_consistency(0, 4, ROOTS[1], ROOTS[4], [])
    with pytest.raises(InvalidProof):
        verify_consistency(1, 4, ROOTS[1], ROOTS[4], [])


def test_proof_requests_outside_the_tree_are_refused() -> None:
    with pytest.raises(InvalidProof, match="index 8"):
        TREE.inclusion_proof(8)
    with pytest.raises(InvalidProof, match="size 9"):
        TREE.root(9)
    with pytest.raises(InvalidProof):
        TREE.consistency_proof(5, 3)
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(b""), 0, 1, [b"short"], ROOTS[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_proofs_verify_on_larger_trees(size: int, data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tree = MerkleTree(hashes)
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(1, size))
    verify_inclusion(hashes[index], index, size, tree.inclusion_proof(index), tree.root())
    verify_consistency(old, size, tree.root(old), tree.root(), tree.consistency_proof(old))
    if old < size:
        with pytest.raises(InvalidProof):
            verify_consistency(old, size, tree.root(old), tree.root(size - 1), tree.consistency_proof(old))
