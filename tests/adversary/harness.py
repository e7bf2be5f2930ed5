"""The attacker's workbench: a real silo in-process, driven by a scripted malicious aggregator.

Why a harness and not mocks: the guarantees of issue 11 are claims about what the *silo*
refuses. Each attack therefore runs against the production code path end to end: the silo's
state folder opened by `silo_node.node.open_silo_node` (real SQLite registry, approvals,
privacy ledger, egress record, audit log), a dataset registered through the real
de-identification layer, an approval policy read from YAML, and `silo_node.runner.SiloRunner`
polling through the real `silo_node.connection.AggregatorConnection` whose gRPC stubs are
replaced by the scripted aggregator's byte handlers (so every message in both directions goes
through `healthfed_common.wire.codec`, and garbage bytes reach the silo exactly as they would
off the network). Only the aggregator is scripted: it is the adversary.

The attacker also plays "colluding silos": cohort members whose signing keys it holds and for
which it runs `healthfed_common.secagg.SecAggClient` itself. `Peer(honest=True)` plays an
honest silo the victim shares a round with (its inputs are known to the test, not to the
attacker's arithmetic), used to check exact sums and to show what a leak would reveal.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.log_store import read_raw_log
from healthfed_common.learning_process import FederatedComputations, build_federated_computations
from healthfed_common.plan import Plan
from healthfed_common.secagg import SecAggClient, SessionParams, keys, shamir
from healthfed_common.secagg.graph import graph_seed
from healthfed_common.secagg.messages import (
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareInbox,
    UnmaskRequest,
    UnmaskResponse,
)
from healthfed_common.silo_keys import decode_public_key, encode_public_key, verify_signature
from healthfed_common.wire import codec
from healthfed_common.wire.messages import (
    Ack,
    AuditCheckpoint,
    PollRequest,
    Refusal,
    SecAggPhaseTask,
    SecAggReply,
    SecAggSession,
    TrainResult,
    TrainTask,
    Wait,
)
from tests.federation.conftest import DATASET, FEATURES, TOY_POLICY, write_toy_export

VICTIM = "victim"

_TRACED_PLANS: list[Path] = []


def traced_plans_dir() -> Path:
    """One traced-plan cache folder for this test process. Why: a victim silo with a new state
    folder traces each plan in a fresh TensorFlow process (~10 s of CPU each); the tests'
    reference computations store their entry here and every new victim starts with a copy in
    its OWN plan-cache folder, which its runner loads and verifies (key, sources, digest,
    fingerprint) as a restarted silo does."""
    if not _TRACED_PLANS:
        folder = Path(tempfile.mkdtemp(prefix="healthfed-adversary-traced-"))
        atexit.register(shutil.rmtree, folder, True)
        _TRACED_PLANS.append(folder / "plan-cache")
    return _TRACED_PLANS[0]


def traced_computations(plan: Plan) -> FederatedComputations:
    """The plan's computations, traced once (in the real tracer process) into `traced_plans_dir`."""
    return build_federated_computations(plan, traced_plans_dir())


def _seed_plan_cache(state: Path) -> None:
    """Copies every entry this process traced into a new silo state's plan-cache (0700/0600,
    as the silo writes them itself); a template copy keeps what it has and gains the rest."""
    shared = traced_plans_dir()
    if not shared.is_dir():
        return
    folder = state / "plan-cache"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in shared.glob("*.plan"):
        target = folder / entry.name
        if not target.exists():
            shutil.copyfile(entry, target)
            target.chmod(0o600)
"""The real silo under attack."""

ANSWER_TIMEOUT_S = 120.0
"""How long one scripted task may take the silo (the first train task builds TF state)."""

APPROVAL_POLICY_YAML = """\
auto_approve: true
require_dp: true
max_epsilon: 10.0
require_secure_aggregation: true
min_secure_aggregation_threshold: 2
"""


# -- identities and plans ------------------------------------------------------------------
def signing_key(silo_id: str) -> Ed25519PrivateKey:
    """A fixed Ed25519 key per silo id: the plans stay byte-identical across tests, so the
    (slow) TFF tracing of each plan shape happens once per test session."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"healthfed-adversary-test/" + silo_id.encode()).digest())


def adversary_plan(
    cohort: Sequence[str],
    *,
    protocol: str = "secagg",
    threshold: int | None = None,
    neighbours: int | None = None,
    colluding_silos: int | None = None,
    rounds: int = 3,
    max_round_attempts: int = 2,
    min_silos: int = 2,
    dp: bool = True,
) -> Plan:
    """A tiny logistic regression over the toy hospitals' four features, with the cohort pinned
    to the test keys. DP by default, so the ledger shows what each accepted round cost."""
    spec: dict[str, Any] = {"protocol": protocol}
    if threshold is not None:
        spec["threshold"] = threshold
    if neighbours is not None:
        spec["neighbours"] = neighbours
    if colluding_silos is not None:
        spec["colluding_silos"] = colluding_silos
    document: dict[str, Any] = {
        "name": "adversary",
        "dataset": DATASET,
        "model": {"id": "logistic_regression"},
        "features": [{"name": name, "transform": "identity"} for name in FEATURES],
        "label": {"name": "outcome", "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.2},
        "local_epochs": 1,
        "batch_size": 8,
        "rounds": rounds,
        "min_silos_per_round": min_silos,
        "max_round_attempts": max_round_attempts,
        "round_deadline_s": 60.0,
        "secure_aggregation": spec,
        "cohort": [{"silo_id": s, "signing_key": encode_public_key(signing_key(s))} for s in sorted(cohort)],
        "seeds": {"model_init": 3, "data_order": 4},
    }
    if dp:
        document["dp"] = {"target_epsilon": 3.0, "target_delta": 1e-5}
    return Plan.model_validate(document)


def cohort_verifier(plan: Plan) -> Callable[[str, bytes, bytes], bool]:
    """Checks a signature under the key the plan pins for that silo (what every honest silo does)."""
    pinned = {m.silo_id: decode_public_key(m.signing_key) for m in plan.cohort}

    def verify(silo: str, payload: bytes, signature: bytes) -> bool:
        return silo in pinned and verify_signature(pinned[silo], payload, signature)

    return verify


# -- the session every party derives ---------------------------------------------------------
def model_digest(client_input: Sequence[np.ndarray]) -> bytes:
    from healthfed_common import secure_round

    return secure_round.state_digest(list(client_input))


def derive_session(
    plan: Plan, computations: FederatedComputations, round_number: int, attempt: int,
    client_input: Sequence[np.ndarray],
) -> SessionParams:
    """The session an honest aggregator announces for this round, attempt and model."""
    from healthfed_common import secure_round

    return secure_round.session_params(plan, computations, round_number, attempt, model_digest(client_input))


def session_offer(params: SessionParams) -> SecAggSession:
    return SecAggSession(
        params.session_id, params.participants, params.threshold, params.bitwidths,
        params.vector_lengths, params.neighbours or 0,
    )


def to_vectors(parts: Iterable[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(p).astype(np.uint64).reshape(-1) for p in parts]


# -- the scripted aggregator (the adversary's end of the wire) --------------------------------
class ScriptedAggregator:
    """Answers the silo's polls with whatever the test scripted (a message, or raw bytes), and
    collects everything the silo submits. Works on bytes, as a gRPC servicer would."""

    def __init__(self, state_dir: Path | None = None) -> None:
        """`state_dir`: where the aggregator's real audit log lives (aggregator.audit): silo
        checkpoints are answered as `aggregator run` answers them. Without it, a bare Ack."""
        from aggregator.audit import AggregatorAudit

        self._script: queue.Queue[Any] = queue.Queue()
        self._answers: queue.Queue[Any] = queue.Queue()
        self.checkpoints: list[AuditCheckpoint] = []
        self.audit = AggregatorAudit(state_dir) if state_dir is not None else None
        self.checkpoint_reply: Callable[[AuditCheckpoint], Any] | None = (
            None if self.audit is None else lambda message: self.audit.exchange(message.silo_id, message))
        """What the aggregator answers a silo's checkpoint with; attacks on the silo as the
        aggregator's witness replace it."""
        self.polls = 0

    def script(self, item: Any) -> None:
        """Queue a message (or raw `bytes`) as the answer to the silo's next poll."""
        self._script.put(item)

    def handle_poll(self, request: bytes, timeout: float | None = None) -> bytes:
        message = codec.decode(request)
        assert isinstance(message, PollRequest), message
        self.polls += 1
        try:
            item = self._script.get(timeout=0.05)
        except queue.Empty:
            item = Wait(0.0, "nothing scripted")
        return item if isinstance(item, bytes) else codec.encode(item)

    def handle_submit(self, request: bytes, timeout: float | None = None) -> bytes:
        message = codec.decode(request)
        if isinstance(message, AuditCheckpoint):
            self.checkpoints.append(message)
            if self.checkpoint_reply is not None:
                return codec.encode(self.checkpoint_reply(message))
        else:
            self._answers.put(message)
        return codec.encode(Ack(True))

    def next_answer(self, timeout: float) -> Any:
        return self._answers.get(timeout=timeout)


def scripted_connection(aggregator: ScriptedAggregator, stop: threading.Event) -> Any:
    """The silo's real `AggregatorConnection` (its retry loop and codec calls), with the two
    gRPC stubs replaced by the scripted aggregator's byte handlers: no TLS, no sockets."""
    from silo_node.connection import AggregatorConnection

    connection = AggregatorConnection.__new__(AggregatorConnection)
    connection._stop = stop
    connection._poll = aggregator.handle_poll
    connection._submit = aggregator.handle_submit
    connection._timeout = 5.0
    connection._max_backoff = 0.5
    return connection


# -- the victim: a real silo node --------------------------------------------------------------
class SiloDied(AssertionError):
    """The silo's work loop ended with an exception (a crash an attacker could cause)."""


@dataclass
class VictimSilo:
    """A real silo node in `state`, its runner polling the scripted aggregator in a thread.

    SQLite handles belong to the thread that opened them, so the runner's thread opens the node
    itself (as `silo-node run` does in its process) and the test thread reads ledger, released
    results and audit log through a second handle on the same files (`services`)."""

    silo_id: str
    state: Path
    policy_file: Path
    services: Any
    aggregator: ScriptedAggregator
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    runner: Any = None
    crash: list[BaseException] = field(default_factory=list)
    with_signing_key: bool = True
    _ids: Any = field(default_factory=itertools.count)

    @classmethod
    def open(
        cls, tmp_path: Path, silo_id: str = VICTIM, rows: int = 40, *, template: Path | None = None,
        approval_policy: str = APPROVAL_POLICY_YAML, with_signing_key: bool = True,
    ) -> "VictimSilo":
        """A new silo with the toy dataset registered and a privacy budget set; or, with
        `template`, a copy of a silo state folder made earlier (a silo that already trained)."""
        from silo_node.datasets.policy import DatasetPolicy
        from silo_node.node import open_silo_node

        state = tmp_path / f"{silo_id}-state"
        policy_file = tmp_path / f"{silo_id}-approval-policy.yaml"
        policy_file.write_text(approval_policy)
        if template is not None:
            shutil.copytree(template, state)
            _seed_plan_cache(state)
            services = open_silo_node(state, silo_id, policy_file=policy_file)
        else:
            _seed_plan_cache(state)
            services = open_silo_node(state, silo_id, policy_file=policy_file)
            export = write_toy_export(tmp_path / f"{silo_id}-export.csv", rows, seed=11)
            policy = DatasetPolicy.model_validate({**TOY_POLICY, "encoding": "utf-8"})
            services.registry.add(DATASET, export, "tabular", policy, actor="person:test")
            services.ledger.set_budget(DATASET, 100.0, 1e-4, actor="person:test")
        silo = cls(silo_id, state, policy_file, services, ScriptedAggregator(tmp_path / f"{silo_id}-aggregator-state"),
                   with_signing_key=with_signing_key)
        silo.start()
        return silo

    def start(self) -> None:
        """Start (or restart, with a fresh runner and nothing in memory) the silo's work loop."""
        self.stop = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(self.stop, ready), name=f"silo-{self.silo_id}", daemon=True)
        self.thread.start()
        assert ready.wait(60), "the silo did not start"

    def restart(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=30)
        self.start()

    def _serve(self, stop: threading.Event, ready: threading.Event) -> None:
        from silo_node.node import open_silo_node
        from silo_node.runner import SiloRunner

        node = open_silo_node(self.state, self.silo_id, policy_file=self.policy_file)
        node.signing_key = signing_key(self.silo_id) if self.with_signing_key else None
        try:
            self.runner = SiloRunner(node, scripted_connection(self.aggregator, stop), poll_interval_s=0.05)
            ready.set()
            self.runner.serve(stop)
        except BaseException as error:  # recorded: a test asserts the silo never dies
            if not stop.is_set():
                self.crash.append(error)
        finally:
            node.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.services.close()
        if self.aggregator.audit is not None:
            self.aggregator.audit.close()

    def task_id(self, what: str) -> str:
        return f"adv-{what}-{next(self._ids)}"

    # -- sending one scripted message and reading the silo's answer -------------------------
    def ask(self, item: Any, timeout: float = ANSWER_TIMEOUT_S) -> Any:
        """Script `item` for the silo's next poll and return its answer (the message it
        submitted, decoded). Raises SiloDied if the work loop died instead."""
        self.aggregator.script(item)
        waited = 0.0
        while True:
            self.assert_alive()
            try:
                return self.aggregator.next_answer(timeout=0.2)
            except queue.Empty:
                waited += 0.2
                if waited > timeout:
                    raise AssertionError(f"the silo gave no answer within {timeout:.0f}s") from None

    def assert_alive(self) -> None:
        if self.crash or self.thread is None or not self.thread.is_alive():
            error = self.crash[0] if self.crash else None
            raise SiloDied(f"the silo's work loop died: {type(error).__name__}: {error}")

    def settle(self, polls: int = 3, timeout: float = 10.0) -> None:
        """Wait until the silo polled `polls` more times (it survived whatever came before)."""
        target = self.aggregator.polls + polls
        waited = 0.0
        while self.aggregator.polls < target:
            self.assert_alive()
            threading.Event().wait(0.05)
            waited += 0.05
            if waited > timeout:
                raise AssertionError("the silo stopped polling")

    # -- what the silo keeps ------------------------------------------------------------------
    def audit_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        raw = read_raw_log(self.state / "audit" / "audit.sqlite3")
        events = [json.loads(entry) for _, entry in raw.entries]
        return [e for e in events if kind is None or e["kind"] == kind]

    def refusal_codes(self) -> list[str]:
        """Codes of every refusal the silo wrote to its audit log."""
        return [str(e["detail"].get("code")) for e in self.audit_events() if e["kind"] == "round.refused"]

    def ledger_charges(self, plan: Plan) -> list[Any]:
        return list(self.services.ledger.charges(plan.dataset, plan.plan_hash))

    def released_vectors(self, plan: Plan, round_number: int) -> list[np.ndarray]:
        """The integer update this silo stored for (plan, round): what a leak would reveal."""
        stored = self.services.released.get(plan.plan_hash, round_number)
        assert stored is not None, f"the silo released nothing for round {round_number}"
        return to_vectors(stored[1].secure_parts)


# -- silos the attacker plays itself -----------------------------------------------------------
class Peer:
    """A cohort member run in-process by the test: a colluder (the attacker holds its key) or
    an honest silo. Its input is random, below 2^(b-3), so sums never wrap."""

    def __init__(self, silo_id: str, plan: Plan, params: SessionParams, seed: int) -> None:
        self.silo_id = silo_id
        self.key = signing_key(silo_id)
        self.client = SecAggClient(silo_id, params, sign=self.key.sign, verify=cohort_verifier(plan))
        # seeded by silo id: the same silo brings the same update to every session it joins
        rng = np.random.default_rng([seed, *hashlib.sha256(silo_id.encode()).digest()[:4]])
        self.vectors = [
            rng.integers(0, 2 ** max(1, b - 3), size=d, dtype=np.uint64)
            for b, d in zip(params.bitwidths, params.vector_lengths)
        ]


def build_roster(session_id: bytes, ads: Iterable[KeyAdvertisement]) -> KeyRoster:
    """The roster an honest aggregator relays: every advertisement, in id order."""
    by_silo = {a.sender: a for a in ads}
    silos = tuple(sorted(by_silo))
    return KeyRoster(
        session_id, silos,
        {s: by_silo[s].c_public for s in silos}, {s: by_silo[s].s_public for s in silos},
        {s: by_silo[s].nonce for s in silos}, {s: by_silo[s].commitment for s in silos},
        {s: by_silo[s].signature for s in silos},
    )


def route_shares(session_id: bytes, bundles: Mapping[str, Sequence[Any]], recipient: str) -> ShareInbox:
    """The inbox an honest aggregator builds for `recipient` from every sender's shares."""
    senders = tuple(sorted(bundles))
    ciphertexts = {s: sh.ciphertext for s in senders for sh in bundles[s] if sh.recipient == recipient}
    return ShareInbox(session_id, recipient, senders, ciphertexts)


def unmask_sum(
    params: SessionParams, roster: KeyRoster, masked: Mapping[str, MaskedInput],
    responses: Mapping[str, UnmaskResponse], survivors: Sequence[str], dropped: Sequence[str],
) -> list[np.ndarray]:
    """The attacker's own unmasking arithmetic (independent of `SecAggServer`): add the
    survivors' masked inputs, rebuild each survivor's self-mask seed and each dropped silo's
    masking key from the revealed shares, strip the masks."""
    from healthfed_common.secagg import prg

    graph = params.graph_for(graph_seed(params.session_id, roster.nonces))
    t = params.share_threshold

    def rebuild(silo: str, kind: str) -> bytes:
        shares = {params.index[h]: getattr(r, kind)[silo] for h, r in responses.items() if silo in getattr(r, kind)}
        assert len(shares) >= t, f"only {len(shares)} shares of {silo}'s {kind}, need {t}"
        return shamir.combine(shares, t)

    sums = [np.zeros(d, dtype=np.uint64) for d in params.vector_lengths]
    for silo in survivors:
        for acc, vector in zip(sums, masked[silo].vectors):
            np.add(acc, vector, out=acc)
    seeds = {v: rebuild(v, "self_mask_shares") for v in survivors}
    removals = []
    for v in dropped:
        private = rebuild(v, "key_shares")
        for u in survivors:
            if u in graph[v]:
                key = keys.mask_key(private, roster.s_public[u], params.session_id, u, v)
                removals.append((key, -(1 if u < v else -1)))
    for j, acc in enumerate(sums):
        for seed in seeds.values():
            prg.apply_mask(acc, seed, j, -1)
        for key, sign in removals:
            prg.apply_mask(acc, key, j, sign)
        np.bitwise_and(acc, np.uint64(params.modulus_mask(j)), out=acc)
    return sums


def plain_sum(params: SessionParams, inputs: Iterable[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Sum mod 2^B with Python integers (independent of the protocol's uint64 arithmetic)."""
    inputs = list(inputs)
    out = []
    for j, (b, d) in enumerate(zip(params.bitwidths, params.vector_lengths)):
        totals = [0] * d
        for vectors in inputs:
            for i, value in enumerate(np.asarray(vectors[j]).tolist()):
                totals[i] += int(value)
        out.append(np.array([t % (1 << b) for t in totals], dtype=np.uint64))
    return out


def sign_split(peers: Iterable[Peer], session_id: bytes, survivors: tuple[str, ...], dropped: tuple[str, ...]) -> dict[str, bytes]:
    """Consistency signatures the attacker can forge: only those of the silos whose keys it holds."""
    payload = keys.consistency_payload(session_id, survivors, dropped)
    return {p.silo_id: p.key.sign(payload) for p in peers}


# -- one round as the attacker drives it -----------------------------------------------------
@dataclass
class Session:
    """One secure-aggregation session: the victim (real) plus in-process peers, stepped phase
    by phase so a test can tamper between phases. Each step returns the victim's answer."""

    victim: VictimSilo
    plan: Plan
    computations: FederatedComputations
    round: int
    attempt: int
    client_input: tuple[np.ndarray, ...]
    params: SessionParams
    peers: dict[str, Peer]
    offered: SecAggSession | None = None
    ads: dict[str, KeyAdvertisement] = field(default_factory=dict)
    roster: KeyRoster | None = None
    bundles: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    signatures: dict[str, bytes] = field(default_factory=dict)
    responses: dict[str, UnmaskResponse] = field(default_factory=dict)

    @classmethod
    def start(
        cls, victim: VictimSilo, plan: Plan, computations: FederatedComputations, *, round_number: int = 1,
        attempt: int = 1, client_input: Sequence[np.ndarray] | None = None, peers: Sequence[str] | None = None,
        seed: int = 0,
    ) -> "Session":
        if client_input is None:
            client_input = computations.prepare(computations.initialize())
        client_input = tuple(np.asarray(a) for a in client_input)
        params = derive_session(plan, computations, round_number, attempt, client_input)
        names = [s for s in plan.cohort_ids if s != victim.silo_id] if peers is None else list(peers)
        members = {s: Peer(s, plan, params, seed) for s in names}
        return cls(victim, plan, computations, round_number, attempt, client_input, params, members)

    # phase 1 ---------------------------------------------------------------------------------
    def train_task(self, **changes: Any) -> TrainTask:
        task = TrainTask(
            task_id=self.victim.task_id("train"), plan_json=self.plan.canonical_bytes(), plan_hash=self.plan.plan_hash,
            round=self.round, attempt=self.attempt, fingerprint=self.computations.fingerprint,
            client_input=self.client_input, secagg=session_offer(self.params),
        )
        return replace(task, **changes)

    def offer(self, task: TrainTask | None = None) -> Any:
        """Offer the round to the victim; the peers advertise too. Returns the victim's answer."""
        for peer in self.peers.values():
            self.ads[peer.silo_id] = peer.client.advertise_keys()
        answer = self.victim.ask(task or self.train_task())
        if isinstance(answer, TrainResult) and isinstance(answer.secagg, KeyAdvertisement):
            self.ads[self.victim.silo_id] = answer.secagg
        return answer

    def phase(self, name: str, payload: Any) -> Any:
        task = SecAggPhaseTask(self.victim.task_id(name), self.plan.plan_hash, self.round, name, payload)
        return self.victim.ask(task)

    # phase 2 ---------------------------------------------------------------------------------
    def share_keys(self, roster: KeyRoster | None = None, victim_roster: KeyRoster | None = None) -> Any:
        """Relay a roster (the honest one by default) to everyone; `victim_roster` lets the
        attacker show the victim a different one."""
        self.roster = roster or build_roster(self.params.session_id, self.ads.values())
        for silo, peer in self.peers.items():
            if silo in self.roster.silos:
                self.bundles[silo] = peer.client.share_keys(self.roster)
        answer = self.phase("share_keys", victim_roster or self.roster)
        if isinstance(answer, SecAggReply):
            self.bundles[self.victim.silo_id] = tuple(answer.payload.shares)
        return answer

    # phase 3 ---------------------------------------------------------------------------------
    def masked_input(self, victim_inbox: ShareInbox | None = None, peers: Iterable[str] | None = None) -> Any:
        sid = self.params.session_id
        for silo in peers if peers is not None else self.bundles:
            if silo in self.peers:
                peer = self.peers[silo]
                self.masked[silo] = peer.client.masked_input(route_shares(sid, self.bundles, silo), peer.vectors)
        answer = self.phase("masked_input", victim_inbox or route_shares(sid, self.bundles, self.victim.silo_id))
        if isinstance(answer, SecAggReply) and isinstance(answer.payload, MaskedInput):
            self.masked[self.victim.silo_id] = answer.payload
        return answer

    def split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        order = self.params.participants
        survivors = tuple(s for s in order if s in self.masked)
        dropped = tuple(s for s in order if s in self.bundles and s not in self.masked)
        return survivors, dropped

    # phase 4 ---------------------------------------------------------------------------------
    def consistency(self, request: UnmaskRequest | None = None) -> Any:
        request = request or UnmaskRequest(self.params.session_id, *self.split())
        for silo in request.survivors:
            if silo in self.peers:
                self.signatures[silo] = self.peers[silo].client.sign_consistency(request).signature
        answer = self.phase("consistency", request)
        if isinstance(answer, SecAggReply) and hasattr(answer.payload, "signature"):
            self.signatures[self.victim.silo_id] = answer.payload.signature
        return answer

    # phase 5 ---------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest | None = None) -> Any:
        survivors, dropped = self.split()
        request = request or UnmaskRequest(self.params.session_id, survivors, dropped, dict(self.signatures))
        for silo in request.survivors:
            if silo in self.peers:
                self.responses[silo] = self.peers[silo].client.unmask(request)
        answer = self.phase("unmask", request)
        if isinstance(answer, SecAggReply) and isinstance(answer.payload, UnmaskResponse):
            self.responses[self.victim.silo_id] = answer.payload
        return answer

    def result(self) -> list[np.ndarray]:
        assert self.roster is not None
        survivors, dropped = self.split()
        return unmask_sum(self.params, self.roster, self.masked, self.responses, survivors, dropped)

    def run_honestly(self) -> list[np.ndarray]:
        """The full v2 protocol with everyone; returns the unmasked sum."""
        for step in (self.offer, self.share_keys, self.masked_input, self.consistency, self.unmask):
            answer = step()
            assert not isinstance(answer, Refusal), f"{step.__name__}: {answer.code} {answer.message}"
        return self.result()


def assert_refused(answer: Any, *codes: str) -> Refusal:
    """The answer is a coded Refusal (one of `codes`) whose message is written for people."""
    assert isinstance(answer, Refusal), f"expected a refusal {codes}, the silo answered {type(answer).__name__}"
    assert answer.code in codes, f"refused with {answer.code} ({answer.message}), expected one of {codes}"
    assert_no_exception_text(answer.message)
    return answer


def assert_no_exception_text(message: str) -> None:
    """No traceback, exception class repr or file path crosses the wire."""
    for marker in ("Traceback", 'File "', "Error(", "Exception(", ".py", "\n  "):
        assert marker not in message, f"refusal message carries exception text: {message!r}"
