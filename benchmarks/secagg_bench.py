"""Secure-aggregation benchmark (a script, not a test).

    .venv/bin/python benchmarks/secagg_bench.py [--train-seconds 30] [--quick]

Prints its figures and writes bench-results/secagg.json with the figures, the command and the
machine. What it measures, and how the round is modelled:

* masking throughput per core: one thread, `prg.apply_mask` (AES-256-CTR keystream into a
  reused buffer, added in place into a uint64 vector), MB of vector masked per second;
* a full protocol round with every party simulated in one process (`simulation.run_round`,
  signed as in production: Ed25519 advertisements and consistency signatures verified by every
  party; threshold floor(2n/3)+1 as plans default to),
  the compute of each silo and of the aggregator timed separately, beside a plain sum of the
  same vectors, for n in {4, 10, 50} x d in {10^4, 10^6}, classic SecAgg and SecAgg+ with the
  degree graph_parameters derives for a plan tolerating 2 dropouts and 1 colluder (t = n - 2,
  c = 1: the same tolerance at every n), and, beside it, for 5 % dropouts and 5 % colluders. Silos run in parallel on their own machines, so the modelled round
  time is  train + max(silo compute) + aggregator compute  versus  train + plain-sum time;
  local training is a configurable fixed cost (`--train-seconds`), reported separately, and
  the raw protocol overhead (without training) is reported too, as is the training time at
  which the ratio reaches 1.10. Network transfer is not modelled (masked vectors are b bits
  per value, like the plain integer vectors);
* the added cost of the active-security rounds: the consistency phase on its own, and the same
  round unsigned beside it (signing and verifying every advertisement and consistency signature);
* peak memory of the aggregator: the recorded messages of a round are replayed into a fresh
  `SecAggServer` under tracemalloc, so only the aggregator's own allocations are counted;
* Flower's SecAgg+ (PyPI `flwr`, in a separate venv) on the same vector sizes, when present.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import cryptography
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from healthfed_common.plan import recommended_threshold  # noqa: E402
from healthfed_common.secagg import (  # noqa: E402
    SecAggClient,
    SecAggServer,
    GraphChoice,
    GraphRequirement,
    SessionParams,
    choose_graph,
)
from healthfed_common.secagg.prg import apply_mask  # noqa: E402
from healthfed_common.secagg.simulation import Phase, run_round  # noqa: E402

BITS = 32
FLWR_PYTHON = pathlib.Path("/tmp/flwr-venv/bin/python")


def machine() -> dict[str, Any]:
    from pipelines.machine_info import cpu_model

    model = cpu_model()
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
        "note": "cores shared with other jobs; each timing is the best of its repetitions",
    }


def masking_throughput(d: int = 1_000_000, reps: int = 20) -> dict[str, float]:
    x = np.zeros(d, dtype=np.uint64)
    key = os.urandom(32)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        apply_mask(x, key, 0, 1)
        best = min(best, time.perf_counter() - start)
    return {"vector_bytes": 8 * d, "mb_per_s": 8 * d / best / 1e6, "seconds_per_mask": best}


def make_inputs(ids: tuple[str, ...], d: int, seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {s: [rng.integers(0, 1 << 16, size=d, dtype=np.uint64)] for s in ids}


def plain_sum_seconds(inputs: dict[str, list[np.ndarray]], d: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        acc = np.zeros(d, dtype=np.uint64)
        for vectors in inputs.values():
            np.add(acc, vectors[0], out=acc)
        np.bitwise_and(acc, np.uint64((1 << BITS) - 1), out=acc)
        best = min(best, time.perf_counter() - start)
    return best


def params_for(n: int, d: int, graph: GraphChoice | None) -> SessionParams:
    """Classic SecAgg at the plans' default threshold (graph None), or the session a plan with
    that derived SecAgg+ graph runs."""
    ids = tuple(f"h{i:02d}" for i in range(n))
    if graph is None or graph.complete:
        return SessionParams(os.urandom(32), ids, recommended_threshold(n), (BITS,), (d,))
    return SessionParams(os.urandom(32), ids, graph.requirement.threshold, (BITS,), (d,), graph.degree,
                         graph.neighbourhood_threshold)


def sparse_graphs(n: int) -> dict[str, GraphChoice]:
    """The SecAgg+ graphs of two stated tolerances, where they are sparse (not complete)."""
    wanted = {"fixed: 2 dropouts, 1 colluder": (n - 2, 1),
              "rates: 5% dropouts, 5% colluders": (n - n // 20, n // 20)}
    found = {}
    for name, (t, c) in wanted.items():
        if n // 2 < t and c <= max(0, 2 * t - n - 1):
            choice = choose_graph(GraphRequirement(n, t, c))
            if not choice.complete:
                found[name] = choice
    return found


def round_case(n: int, d: int, graph: GraphChoice | None, train: float, reps: int,
               drop_at: dict[str, Phase] | None = None, with_flower: bool = False,
               tolerance: str = "classic") -> dict[str, Any]:
    params = params_for(n, d, graph)
    inputs = make_inputs(params.participants, d, n * 7 + d)
    plain = plain_sum_seconds(inputs, d, max(reps, 3))
    runs, unsigned = [], []
    for _ in range(reps):
        start = time.perf_counter()
        result = run_round(params, inputs, drop_at, authenticated=True)
        wall = time.perf_counter() - start
        runs.append((max(result.silo_seconds.values()), statistics.mean(result.silo_seconds.values()),
                     result.server_seconds, wall, statistics.median(result.silo_seconds.values()),
                     result.phase_silo_max_seconds["consistency"] + result.phase_server_seconds["consistency"],
                     result))
        bare = run_round(params, inputs, drop_at, authenticated=False)
        unsigned.append(max(bare.silo_seconds.values()) + bare.server_seconds)
    # best of the repetitions, metric by metric: the cores are shared, noise only ever adds time
    silo_max, silo_mean, server, wall, silo_median, consistency = (min(r[i] for r in runs) for i in range(6))
    result = runs[-1][6]
    expected = np.zeros(d, dtype=np.uint64)
    for s in result.counted:
        np.add(expected, inputs[s][0], out=expected)
    exact = bool(np.array_equal(expected & np.uint64((1 << BITS) - 1), result.sums[0]))
    secure_round = train + silo_max + server
    plain_round = train + plain
    flwr = flower_round(params, inputs) if with_flower else {"ran": False, "why": "not requested for this case"}
    if flwr.get("ran"):
        flwr["round_ratio"] = (train + flwr["silo_seconds_max"] + flwr["aggregator_seconds"]) / plain_round
    return {"flower_secaggplus": flwr,
        "n": n, "d": d, "bits": BITS, "protocol": "classic" if params.degree == n - 1 else "secagg+",
        "tolerance": tolerance,
        "neighbours": params.degree, "threshold": params.threshold, "share_threshold": params.share_threshold,
        "dropped": drop_at or {}, "exact_sum": exact, "counted": len(result.counted),
        "silo_seconds_max": silo_max, "silo_seconds_mean": silo_mean, "silo_seconds_median": silo_median, "aggregator_seconds": server,
        "simulation_wall_seconds": wall, "plain_sum_seconds": plain,
        "train_seconds": train,
        "round_ratio": secure_round / plain_round,
        "raw_overhead_seconds": silo_max + server - plain,
        "consistency_phase_seconds": consistency,
        "unsigned_protocol_seconds": min(unsigned),
        "signing_overhead_seconds": silo_max + server - min(unsigned),
        "raw_ratio_without_training": (silo_max + server) / plain,
        "train_seconds_for_ratio_1_10": max(0.0, (silo_max + server - 1.1 * plain) / 0.1),
    }


class Recorder(SecAggServer):
    """A server that logs every message it receives, for the memory replay."""

    def __init__(self, params: SessionParams) -> None:
        super().__init__(params)
        self.log: list[tuple[str, tuple[Any, ...]]] = []

    def receive_advertisement(self, adv: Any) -> None:
        self.log.append(("receive_advertisement", (adv,)))
        super().receive_advertisement(adv)

    def receive_shares(self, sender: str, shares: Any) -> None:
        self.log.append(("receive_shares", (sender, shares)))
        super().receive_shares(sender, shares)

    def receive_masked_input(self, masked: Any) -> None:
        self.log.append(("receive_masked_input", (masked,)))
        super().receive_masked_input(masked)

    def receive_consistency_signature(self, signed: Any) -> None:
        self.log.append(("receive_consistency_signature", (signed,)))
        super().receive_consistency_signature(signed)

    def receive_unmask_response(self, resp: Any) -> None:
        self.log.append(("receive_unmask_response", (resp,)))
        super().receive_unmask_response(resp)


def aggregator_memory(n: int, d: int, graph: GraphChoice | None) -> dict[str, Any]:
    params = params_for(n, d, graph)
    inputs = make_inputs(params.participants, d, 1)
    rec = Recorder(params)
    clients = {s: SecAggClient(s, params) for s in params.participants}
    for s in params.participants:
        rec.receive_advertisement(clients[s].advertise_keys())
    roster = rec.roster()
    for s in params.participants:
        rec.receive_shares(s, clients[s].share_keys(roster))
    for s in params.participants:
        rec.receive_masked_input(clients[s].masked_input(rec.inbox_for(s), inputs[s]))
    split = rec.unmask_request()
    for s in params.participants:
        rec.receive_consistency_signature(clients[s].sign_consistency(split))
    request = rec.signed_unmask_request()
    for s in params.participants:
        rec.receive_unmask_response(clients[s].unmask(request))
    expected = rec.finish()
    tracemalloc.start()
    server = SecAggServer(params)
    closers = {"receive_shares": server.roster, "receive_masked_input": lambda: server.inbox_for("h00"),
               "receive_consistency_signature": server.unmask_request,
               "receive_unmask_response": server.signed_unmask_request}
    closed = set()
    for method, args in rec.log:
        if method in closers and method not in closed:
            closers[method]()
            closed.add(method)
        getattr(server, method)(*args)
    got = server.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.array_equal(got[0], expected[0])
    return {"n": n, "d": d, "neighbours": params.degree, "aggregator_peak_bytes": peak,
            "aggregator_peak_mb": peak / 1e6, "one_vector_mb": 8 * d / 1e6,
            "note": "aggregator-owned allocations only (running sum, shares, unmask work); "
                    "inbound messages are held by the transport, one masked input = one_vector_mb"}


FLWR_DRIVER = r"""
import json, sys, time
import numpy as np
import flwr
from flwr.common import ndarrays_to_parameters, bytes_to_ndarray
import importlib; M = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition, parameters_subtraction, parameters_mod

spec = json.loads(sys.argv[1])
inputs = np.load(spec["inputs"])            # shape (n, d), integers in [0, 2^16)
graph = {int(k): set(v) for k, v in spec["graph"].items()}   # neighbours incl. self
n, d = inputs.shape
MOD, TARGET, CLIP = 1 << 32, 1 << 16, float(1 << 15)
silo = {i: 0.0 for i in range(n)}
def timed(i, fn, *a):
    t = time.perf_counter(); r = fn(*a); silo[i] += time.perf_counter() - t; return r
states = {i: M.SecAggPlusState(nid=i) for i in range(n)}
setup = {Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: len(graph[0]), Key.THRESHOLD: spec["threshold"],
         Key.CLIPPING_RANGE: CLIP, Key.TARGET_RANGE: TARGET, Key.MOD_RANGE: MOD, Key.MAX_WEIGHT: 1.0}
pks = {i: timed(i, M._setup, states[i], setup) for i in range(n)}
inbox = {i: ([], []) for i in range(n)}
for i in range(n):
    cfg = {str(j): (pks[j][Key.PUBLIC_KEY_1], pks[j][Key.PUBLIC_KEY_2]) for j in sorted(graph[i])}
    out = timed(i, M._share_keys, states[i], cfg)
    for dst, ct in zip(out[Key.DESTINATION_LIST], out[Key.CIPHERTEXT_LIST]):
        inbox[dst][0].append(i); inbox[dst][1].append(ct)
server = 0.0
agg = None
for i in range(n):
    x = [(inputs[i].astype(np.float64) - CLIP)]
    cfg = {Key.SOURCE_LIST: inbox[i][0], Key.CIPHERTEXT_LIST: inbox[i][1]}
    out = timed(i, M._collect_masked_vectors, states[i], cfg, 1, ndarrays_to_parameters(x))
    t = time.perf_counter()
    vec = [bytes_to_ndarray(b) for b in out[Key.MASKED_PARAMETERS]]
    agg = vec if agg is None else parameters_addition(agg, vec)
    server += time.perf_counter() - t
shares = {i: [] for i in range(n)}
for i in range(n):
    out = timed(i, M._unmask, states[i], {Key.ACTIVE_NODE_ID_LIST: sorted(graph[i]), Key.DEAD_NODE_ID_LIST: []})
    for nid, sh in zip(out[Key.NODE_ID_LIST], out[Key.SHARE_LIST]):
        shares[nid].append(sh)
t = time.perf_counter()
shape = [a.shape for a in agg]
for nid, sl in shares.items():
    secret = combine_shares(sl)
    agg = parameters_subtraction(agg, pseudo_rand_gen(secret, MOD, shape))
agg = parameters_mod(agg, MOD)
server += time.perf_counter() - t
exact = bool(np.array_equal(agg[1].astype(np.uint64), inputs.astype(np.uint64).sum(axis=0) % MOD)) and int(agg[0][0]) == n * TARGET
print(json.dumps({"flwr": flwr.__version__, "n": n, "d": d, "neighbours": len(graph[0]) - 1,
                  "silo_seconds_max": max(silo.values()), "silo_seconds_mean": sum(silo.values()) / n,
                  "aggregator_seconds": server, "exact_sum": exact}))
"""

FLWR_MASK_RATE = r"""
import json, sys, time
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
d = int(sys.argv[1]); best = float("inf")
for _ in range(5):
    t = time.perf_counter(); pseudo_rand_gen(b"\x01" * 32, 1 << 32, [(d,)]); best = min(best, time.perf_counter() - t)
print(json.dumps({"d": d, "mask_seconds": best, "mb_per_s_of_uint64_vector": 8 * d / best / 1e6}))
"""


def flower_available() -> bool:
    return FLWR_PYTHON.exists()


def flower_round(params: SessionParams, inputs: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Flower's own SecAgg+ client stages (flwr.client.mod secaggplus_mod: _setup, _share_keys,
    _collect_masked_vectors, _unmask) and its server unmasking steps, driven in one process on
    the same integer vectors and the same neighbour graph and share threshold as ours."""
    if not flower_available():
        return {"ran": False, "why": f"no flwr venv at {FLWR_PYTHON}"}
    ids = params.participants
    number = {s: i for i, s in enumerate(ids)}
    neighbours = params.graph_for(os.urandom(32))  # same degree and shape as a session's graph
    graph = {number[s]: sorted([number[v] for v in neighbours[s]] + [number[s]]) for s in ids}
    path = pathlib.Path(tempfile.mkdtemp()) / "inputs.npy"
    np.save(path, np.stack([inputs[s][0] for s in ids]).astype(np.int64))
    spec = json.dumps({"inputs": str(path), "graph": graph, "threshold": params.share_threshold})
    try:
        proc = subprocess.run([str(FLWR_PYTHON), "-c", FLWR_DRIVER, spec], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"ran": False, "why": "over 900 s"}
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode != 0:
        return {"ran": False, "why": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"ran": True, **json.loads(proc.stdout.strip().splitlines()[-1])}


def flower_mask_rate(d: int) -> dict[str, Any]:
    if not flower_available():
        return {"ran": False, "why": f"no flwr venv at {FLWR_PYTHON}"}
    proc = subprocess.run([str(FLWR_PYTHON), "-c", FLWR_MASK_RATE, str(d)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"ran": False, "why": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"ran": True, **json.loads(proc.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=30.0,
                        help="modelled local-training time per round (fixed cost, same for both)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--no-flower", action="store_true", help="skip the Flower comparison")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "secagg.json"))
    args = parser.parse_args()

    report: dict[str, Any] = {"command": " ".join([pathlib.Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    thr = masking_throughput(d=100_000 if args.quick else 1_000_000)
    report["masking_throughput_per_core"] = thr
    print(f"masking throughput, 1 core: {thr['mb_per_s']:.0f} MB/s")

    sizes = [10**4] if args.quick else [10**4, 10**6]
    rounds = []
    for d in sizes:
        for n in (4, 10, 50):
            for tolerance, graph in [("classic", None), *sparse_graphs(n).items()]:
                reps = 3 if d <= 10**4 or n <= 10 else 2
                case = round_case(n, d, graph, args.train_seconds, reps, with_flower=not args.no_flower,
                                  tolerance=tolerance)
                rounds.append(case)
                print(f"n={n:3d} d={d:8d} {case['protocol']:8s} k={case['neighbours']:2d} ({tolerance}) "
                      f"silo max {case['silo_seconds_max']*1e3:8.1f} ms  aggregator {case['aggregator_seconds']*1e3:8.1f} ms  "
                      f"plain {case['plain_sum_seconds']*1e3:7.2f} ms  round ratio {case['round_ratio']:.4f}  "
                      f"raw x{case['raw_ratio_without_training']:.0f}  exact={case['exact_sum']}")
                fl = case["flower_secaggplus"]
                if fl.get("ran"):
                    print(f"      flower {fl['flwr']}: silo max {fl['silo_seconds_max']*1e3:8.1f} ms  aggregator "
                          f"{fl['aggregator_seconds']*1e3:8.1f} ms  round ratio {fl['round_ratio']:.4f}  exact={fl['exact_sum']}")
                else:
                    print(f"      flower: not run ({fl.get('why')})")
    d_big = sizes[-1]
    fixed = "fixed: 2 dropouts, 1 colluder"
    for n, graph in ((10, None), (50, sparse_graphs(50)[fixed])):
        drop: dict[str, Phase] = {"h01": "masked", "h02": "unmask"}
        case = round_case(n, d_big, graph, args.train_seconds, 1, drop, tolerance="classic" if graph is None else fixed)
        rounds.append(case)
        print(f"n={n:3d} d={d_big:8d} {case['protocol']:8s} with 1 dropped before masked input, 1 during unmasking: "
              f"aggregator {case['aggregator_seconds']*1e3:.1f} ms  round ratio {case['round_ratio']:.4f}  exact={case['exact_sum']}")
    report["rounds"] = rounds

    def find(n: int, d: int, tolerance: str) -> dict[str, Any] | None:
        return next((r for r in rounds if r["n"] == n and r["d"] == d and r["tolerance"] == tolerance
                     and not r["dropped"]), None)

    r10 = find(10, d_big, "classic")
    rates = "rates: 5% dropouts, 5% colluders"
    r10p, r50p = find(10, d_big, fixed), find(50, d_big, fixed)
    r10r, r50r = find(10, d_big, rates), find(50, d_big, rates)
    targets: dict[str, Any] = {}
    if r10:
        targets["round_ratio_10x%d" % d_big] = {"value": r10["round_ratio"], "target": 1.10,
                                                "met": r10["round_ratio"] <= 1.10, "train_seconds": args.train_seconds,
                                                "train_seconds_needed": r10["train_seconds_for_ratio_1_10"]}
    if r10p and r50p:
        ratio = r50p["silo_seconds_mean"] / r10p["silo_seconds_mean"]
        targets["per_silo_cost_50_vs_10_secaggplus"] = {
            "value": ratio, "target": 2.0, "met": ratio <= 2.0, "tolerance": fixed,
            "degrees": [r10p["neighbours"], r50p["neighbours"]],
            "note": "the same stated tolerance at both sizes; the degree is derived so that no choice of "
                    "dropped silos splits the honest survivors (graph_parameters), so it grows with the number of "
                    "dropouts + colluders tolerated, not with n"}
    if r10r and r50r:
        ratio = r50r["silo_seconds_mean"] / r10r["silo_seconds_mean"]
        targets["per_silo_cost_50_vs_10_secaggplus_same_fractions"] = {
            "value": ratio, "tolerance": rates, "degrees": [r10r["neighbours"], r50r["neighbours"]],
            "note": "5 % of 10 rounds down to 0 dropouts and 0 colluders (degree 2); at 50 it is 2 and 2 "
                    "(degree 8): tolerating more costs more, which Bell et al.'s O(log n) avoids only by assuming "
                    "dropouts the coordinator does not choose"}
    targets["masking_mb_per_s"] = {"value": thr["mb_per_s"], "target": 1000, "met": thr["mb_per_s"] >= 1000}
    if r10:
        targets["consistency_round_10x%d" % d_big] = {
            "consistency_phase_seconds": r10["consistency_phase_seconds"],
            "signing_overhead_seconds": r10["signing_overhead_seconds"],
            "share_of_protocol": r10["consistency_phase_seconds"] / (r10["silo_seconds_max"] + r10["aggregator_seconds"]),
            "note": "consistency phase = slowest silo signing the survivor set + aggregator verifying n signatures; "
                    "signing overhead = signed round minus the same round unsigned (advertisements and consistency)",
        }
    report["targets"] = targets

    mem = [aggregator_memory(n, d_big, graph) for n, graph in ((10, None), (50, sparse_graphs(50)[fixed]))]
    report["aggregator_memory"] = mem
    report["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for m in mem:
        print(f"aggregator peak memory n={m['n']} d={m['d']}: {m['aggregator_peak_mb']:.1f} MB "
              f"(one vector = {m['one_vector_mb']:.1f} MB)")
    report["flower"] = {
        "how": "flwr installed with pip in a separate venv (/tmp/flwr-venv); its SecAgg+ client stages and server "
               "unmasking steps are driven on the same vectors, graph and share threshold (per round case, key "
               "'flower_secaggplus'). Its quantization is set up so the integers it sums are exactly ours.",
        "mask_generator": flower_mask_rate(sizes[-1]) if not args.no_flower else {"ran": False, "why": "--no-flower"},
        "observations": [
            "pseudo_rand_gen seeds numpy RandomState with the XOR of the 32-byte seed's eight 32-bit words: "
            "masks have at most 2^32 possibilities (brute-forceable), not a cryptographic PRG",
            "_unmask returns shares for active and dead node lists without checking that they are disjoint: "
            "a client gives both kinds of share for one peer when asked",
        ],
    }
    print("flower mask generator:", json.dumps(report["flower"]["mask_generator"]))
    print("targets:", json.dumps(targets, indent=1))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
