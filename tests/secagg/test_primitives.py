"""Unit tests of the building blocks: Shamir over GF(2^256 + 297), the AES-CTR mask PRG,
the SecAgg+ neighbour graph and parameter validation."""

from __future__ import annotations

import itertools
import os
import secrets

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from healthfed_common.secagg import InvalidParameters, SessionParams
from healthfed_common.secagg.graph import effective_degree, neighbour_sets
from healthfed_common.secagg.prg import apply_mask, mask_stream
from healthfed_common.secagg.shamir import PRIME, combine, split

from .helpers import make_params


def _miller_rabin(n: int, rounds: int = 48) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_prime_and_holds_every_32_byte_secret() -> None:
    assert PRIME == 2**256 + 297 and PRIME > 2**256
    assert _miller_rabin(PRIME)  # error probability < 4^-48
    assert not any(_miller_rabin(2**256 + k, 8) for k in range(1, 297, 2))  # smallest such prime


@settings(max_examples=30, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(2, 9), data=st.data())
def test_shamir_any_t_shares_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = split(secret, xs, t)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert combine({x: shares[x] for x in subset}, t) == secret


def test_shamir_below_threshold_is_consistent_with_any_secret() -> None:
    """t-1 shares plus a chosen secret always define a valid polynomial: for t = 2, one share
    and *any* candidate secret are consistent, so one share carries no information."""
    shares = split(os.urandom(32), [1, 2, 3], 2)
    with pytest.raises(ValueError):
        combine({1: shares[1]}, 2)
    y1 = int.from_bytes(shares[1], "big")
    for guess in (0, 1, 2**255):
        slope = (y1 - guess) % PRIME  # line through (0, guess) and (1, y1)
        assert (guess + slope * 1) % PRIME == y1


def test_prg_is_aes_ctr_keystream_with_disjoint_counters() -> None:
    key = os.urandom(32)
    length = (1 << 17) + 3  # crosses the chunk boundary
    ks = Cipher(algorithms.AES(key), modes.CTR((5 << 64).to_bytes(16, "big"))).encryptor().update(bytes(8 * length))
    np.testing.assert_array_equal(mask_stream(key, 5, length), np.frombuffer(ks, dtype="<u8"))
    assert not np.array_equal(mask_stream(key, 0, 64), mask_stream(key, 1, 64))
    x = np.arange(1000, dtype=np.uint64)
    y = x.copy()
    apply_mask(y, key, 2, 1)
    assert not np.array_equal(x, y)
    apply_mask(y, key, 2, -1)
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n,k", [(10, 4), (11, 4), (12, 5), (11, 5), (50, 14), (7, 6), (7, None)])
def test_graph_is_regular_symmetric_and_agreed(n: int, k: int | None) -> None:
    ids = tuple(f"s{i}" for i in range(n))
    sid = os.urandom(32)
    g = neighbour_sets(ids, sid, k)
    assert g == neighbour_sets(ids, sid, k)  # every party derives the same graph
    degree = effective_degree(n, k)
    for u, nbrs in g.items():
        assert u not in nbrs and len(nbrs) == degree
        assert all(u in g[v] for v in nbrs)
    seen, frontier = {ids[0]}, [ids[0]]  # connected
    while frontier:
        frontier = [v for u in frontier for v in g[u] if v not in seen]
        seen.update(frontier)
    assert seen == set(ids)


def test_graph_depends_on_session() -> None:
    ids = tuple(f"s{i}" for i in range(30))
    graphs = {frozenset(neighbour_sets(ids, os.urandom(32), 4)["s0"]) for _ in range(5)}
    assert len(graphs) > 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 2},  # not a strict majority of 4
        {"threshold": 5},
        {"session_id": b"short"},
        {"participants": ("a", "a", "b", "c")},
        {"bitwidths": (65,)},
        {"bitwidths": (0,)},
        {"vector_lengths": (0,)},
        {"vector_lengths": (1, 2)},
        {"neighbours": 1},
    ],
)
def test_invalid_parameters(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = dict(
        session_id=os.urandom(32), participants=("a", "b", "c", "d"), threshold=3,
        bitwidths=(8,), vector_lengths=(4,),
    )
    base.update(kwargs)
    with pytest.raises(InvalidParameters) as err:
        SessionParams(**base)  # type: ignore[arg-type]
    assert isinstance(err.value, ValueError)


def test_share_threshold() -> None:
    assert make_params(10, 7).share_threshold == 7
    p = make_params(50, 26, neighbours=14)
    assert p.degree == 14 and p.share_threshold == 8
    assert make_params(50, 40, neighbours=14).share_threshold == 12
    # a plan's session carries the neighbourhood threshold graph_parameters derived
    assert make_params(50, 48, neighbours=8, neighbourhood_threshold=6).share_threshold == 6
    with pytest.raises(InvalidParameters, match="strict majority of the 9 holders"):
        make_params(50, 48, neighbours=8, neighbourhood_threshold=4)
    assert list(itertools.islice(p.graph_for(os.urandom(32)), 1))
