"""A real network outage: each silo process runs in its own network namespace, wired to the
aggregator's bridge by a veth pair, and one silo's link is pulled during the plan.

The cut-off silo's calls hang and time out; it retries with backoff. The round it misses
closes by the straggler grace with the two others (through secure aggregation, whose roster
then holds only them), the silo is reported failing and not waited for; once the link is
back it reconnects, is waited for again, contributes to later rounds, and every process
exits when the plan is done."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from aggregator.state_store import StateStore
from healthfed_common.plan import parse_plan
from pipelines.local_federation import local_federation
from tests.federation.conftest import toy_plan
from tests.federation.netns import FaultNetwork, unavailable_reason
from tests.federation.support import living, prepare_toy_silos, wait_for_line

SILOS = ["north", "south", "east"]
ROUNDS = 12  # a silo slow to start may miss the first rounds by the grace (rounds take seconds with
# the pre-traced plan): enough rounds must remain after the cut for the silo to fail and rejoin
DEADLINE_S = 90.0  # covers the first round on a busy machine; the cut round must not need it
GRACE_S = 4.0


@pytest.fixture()
def fault_network():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"network-fault tests need network namespaces, and here {reason}"
                    + (" (CI: run the job as root with CAP_NET_ADMIN)" if os.environ.get("CI") else ""))
    network = FaultNetwork.create(SILOS)
    try:
        yield network
    finally:
        network.close()
    assert network.leftovers() == [], "namespaces or links of the test were left behind"


def test_a_silo_cut_off_the_network_retries_is_not_waited_for_and_rejoins(
    tmp_path: Path, write_plan, fault_network: FaultNetwork
) -> None:
    document = toy_plan(rounds=ROUNDS, min_silos=2, deadline_s=DEADLINE_S, straggler_grace_s=GRACE_S,
                        failing_silo_rounds=1, secure_aggregation={"protocol": "secagg", "threshold": 2})
    plan_path = write_plan(document)
    # printer=print: pytest shows what each process said (warnings, rounds) when this fails
    with local_federation(tmp_path / "run", SILOS, printer=print, host=fault_network.host_address) as federation:
        prepare_toy_silos(federation, tmp_path / "exports", {"north": 50, "south": 40, "east": 60})
        # calls hang on a dead link: let them fail (and be retried) after 5s, retry at least every 1s
        federation.configure_silo("east", call_timeout_s=5.0, max_backoff_s=1.0)
        # the product's poll pace, not the quicker one test silos get (conftest): rounds must not
        # all be over before the cut silo is restored and can rejoin one
        for silo_id in SILOS:
            federation.configure_silo(silo_id, poll_interval_s=2.0)
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=2)
        for silo_id in SILOS:
            federation.start_silo(silo_id, netns=fault_network.namespace(silo_id))
        east = federation.members["east"]
        # a silo slow to build the computation may miss round 1 by the grace: cut once it took part
        full = aggregator.lines[wait_for_line(aggregator, "3/3 silos", 500)]
        east_before_cut = len(east.lines)
        fault_network.cut("east")
        connected_round = int(full.split()[1].split("/")[0])
        wait_for_line(aggregator, "east is failing", 120, after=aggregator.lines.index(full))
        wait_for_line(east, "aggregator unreachable", 60, after=east_before_cut)
        restored_at = time.time()
        fault_network.restore("east")
        wait_for_line(aggregator, "east answered again", 120)
        rejoined_in = time.time() - restored_at
        assert federation.wait("aggregator", 300) == 0, "\n".join(aggregator.lines[-40:])
        for silo_id in SILOS:  # each learns the plan finished and exits by itself
            assert federation.wait(silo_id, 60) == 0, "\n".join(federation.members[silo_id].lines[-20:])
        pids = [member.process.pid for member in federation.members.values()]
        in_namespaces = [subprocess.run(["ip", "netns", "pids", fault_network.namespace(s)], capture_output=True,
                                        text=True).stdout.split() for s in SILOS]
        report = federation.run_report(tmp_path / "out")
        plan = parse_plan((tmp_path / "out" / "plan.json").read_bytes())  # as run: with the enrolled cohort
        store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
        outcomes = store.outcomes(plan.plan_hash)
        store.close()
        east_log = "\n".join(east.lines[east_before_cut:])

    assert report["rounds_completed"] == ROUNDS
    assert report["secure_aggregation"] == "secagg"
    by_round = {r["round"]: r for r in report["round_metrics"]}
    after_cut = [s for s in report["silo_status"] if s["round"] > connected_round]
    assert [(s["silo"], s["status"]) for s in after_cut][:2] == [("east", "failing"), ("east", "rejoined")], after_cut
    failed_in, rejoined_in_round = after_cut[0]["round"], after_cut[1]["round"]
    cut_round = by_round[failed_in]
    assert cut_round["silos"] == ["north", "south"], "the round goes on with the connected silos"
    assert cut_round["seconds"] < DEADLINE_S - 30, "the cut round closed by the grace, not the deadline"
    assert all(by_round[r]["silos"] == ["north", "south"] for r in range(failed_in, rejoined_in_round))
    assert "east" in by_round[rejoined_in_round]["silos"], "the silo is back in the secure sum"
    assert rejoined_in < 60, f"rejoined {rejoined_in:.0f}s after the link came back"
    assert ("east", "failing") in [(o[2], o[3]) for o in outcomes]
    assert ("east", "rejoined") in [(o[2], o[3]) for o in outcomes]
    assert "retrying in" in east_log, "the cut-off silo retries with backoff"
    assert not any("secure aggregation aborted" in line for line in aggregator.lines)
    assert in_namespaces == [[], [], []], "no process is left in the test's namespaces"
    time.sleep(0.2)
    assert living(pids) == []
