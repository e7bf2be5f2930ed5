"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.

Why this exact construction: it is the one auditors and existing tooling already know
(RFC 6962/9162, transparency-dev), its leaf/node domain separation (0x00 / 0x01 prefixes)
prevents second-preimage tricks, and its consistency proofs let a witness check that a log
only ever grew, without seeing its entries.

`MerkleTree` keeps every perfect, aligned subtree hash, so after O(n) hashing the root of
any prefix and every proof cost O(log n) hashes; the verification functions follow the
algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 literally and raise `InvalidProof` with the
reason instead of returning False, so a caller cannot ignore a failed check by accident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from compliance.errors import InvalidProof

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = HASH() — the root of the empty tree (RFC 9162 §2.1.1)."""


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = HASH(0x00 || d): the hash of one log entry."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right): an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k in RFC 9162: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes, with prefix roots and proofs.

    `levels[h][i]` is the hash of the perfect subtree of 2**h leaves starting at leaf
    i * 2**h; every subtree the RFC algorithms need is either such a subtree or split
    into them, hence the O(log n) cost per root or proof.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for value in leaf_hashes:
            self.append_leaf_hash(value)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append_entry(self, entry: bytes) -> int:
        """Append a raw entry (hashed as a leaf); return its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, value: bytes) -> int:
        """Append an already hashed leaf; return its index."""
        if len(value) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(value)}")
        index = self.size
        self._levels[0].append(value)
        height = 0
        while len(self._levels[height]) % 2 == 0:
            if len(self._levels) == height + 1:
                self._levels.append([])
            level = self._levels[height]
            self._levels[height + 1].append(node_hash(level[-2], level[-1]))
            height += 1
        return index

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored hash of leaf `index`."""
        self._check_index(index, self.size)
        return self._levels[0][index]

    def _subtree(self, start: int, count: int) -> bytes:
        """MTH(D[start:start+count]) for the aligned ranges the RFC recursion produces."""
        if count == 0:
            return EMPTY_ROOT
        if _is_power_of_two(count) and start % count == 0:
            return self._levels[count.bit_length() - 1][start // count]
        k = _largest_power_of_two_below(count)
        return node_hash(self._subtree(start, k), self._subtree(start + k, count - k))

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]); the whole tree by default."""
        size = self.size if size is None else size
        self._check_size(size)
        return self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1."""
        size = self.size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        return self._path(index, 0, size)

    def _path(self, index: int, start: int, count: int) -> list[bytes]:
        if count == 1:
            return []
        k = _largest_power_of_two_below(count)
        if index < k:
            return self._path(index, start, k) + [self._subtree(start + k, count - k)]
        return self._path(index - k, start + k, count - k) + [self._subtree(start, k)]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 (empty if old is 0 or new)."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise InvalidProof(
                f"consistency proof asked from size {old_size} to {new_size}: "
                "the old size must be between 0 and the new size"
            )
        if old_size == 0 or old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, start: int, count: int, complete: bool) -> list[bytes]:
        if m == count:
            return [] if complete else [self._subtree(start, count)]
        k = _largest_power_of_two_below(count)
        if m <= k:
            return self._subproof(m, start, k, complete) + [
                self._subtree(start + k, count - k)
            ]
        return self._subproof(m - k, start + k, count - k, False) + [self._subtree(start, k)]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise InvalidProof(f"tree size {size} is outside 0..{self.size}")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise InvalidProof(f"leaf index {index} is outside 0..{size - 1} (tree size {size})")


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes."""
    return MerkleTree(leaf_hashes).root()


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` (a leaf hash) sits at `index` of the tree of `size` with `root`.

    RFC 9162 §2.1.3.2, step by step. Raises `InvalidProof` naming the failed step.
    """
    if index < 0 or size < 0:
        raise InvalidProof(f"negative index {index} or size {size}")
    if index >= size:
        raise InvalidProof(f"leaf index {index} is not below tree size {size}")
    _check_hashes(proof, "inclusion proof")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is shorter than the path to the root")
    if r != root:
        raise InvalidProof("inclusion proof does not lead to the given root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (new_size, new_root) extends the tree (old_size, old_root).

    RFC 9162 §2.1.4.2 for 0 < old_size < new_size; the two cases the RFC leaves to the
    caller are handled as transparency-dev does: equal sizes need an empty proof and equal
    roots, and the empty tree (whose root must be SHA-256 of nothing) needs an empty proof.
    Raises `InvalidProof` naming the failed step.
    """
    if old_size < 0 or new_size < 0:
        raise InvalidProof(f"negative tree size ({old_size} → {new_size})")
    if old_size > new_size:
        raise InvalidProof(f"old size {old_size} is larger than new size {new_size}")
    _check_hashes(proof, "consistency proof")
    if old_size == new_size:
        if proof:
            raise InvalidProof("trees of equal size need an empty consistency proof")
        if old_root != new_root:
            raise InvalidProof(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise InvalidProof("a proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise InvalidProof("the root given for the empty tree is not SHA-256('')")
        return
    if not proof:
        raise InvalidProof("empty consistency proof between different sizes")
    path = list(proof)
    if _is_power_of_two(old_size):
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is shorter than needed")
    if fr != old_root:
        raise InvalidProof("consistency proof does not reproduce the old root")
    if sr != new_root:
        raise InvalidProof("consistency proof does not reproduce the new root")


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for position, value in enumerate(proof):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise InvalidProof(f"{what}[{position}] is not a {HASH_SIZE}-byte hash")
