"""Imaging pipeline: a small CNN trained across hospitals from DICOM folders, as a real
federation on this machine.

    python -m pipelines.imaging [--out runs/imaging] [--rounds 4] [--per-hospital 120] [--no-dp]

Steps: write demo DICOM exports with identifier-laden headers (pipelines.synthetic_dicom),
provision a LocalFederation, register each folder with `silo-node data add chest_images DIR
--kind dicom --policy FILE` (PS3.15 Annex E de-identification, UIDs replaced, burned-in
annotation quarantined; the ingestion report is printed), set each silo's privacy budget
with `silo-node ledger set-budget`, then run one aggregator and three silo processes
training `small_cnn` under secure aggregation (and record-level DP-SGD unless --no-dp), and
evaluate on each hospital's held-out images. Writes OUT/summary.json and, for the default
run, bench-results/imaging.json.

`register_silo()` / `silo_views()` are the in-process equivalents used by the data-layer tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from healthfed_common.plan import Plan
from pipelines.synthetic_dicom import ExportSummary, write_federation
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry
from silo_node.datasets.report import IngestionReport
from silo_node.datasets.view import TrainingView
from silo_node.storage import open_silo_db

DATASET = "chest_images"
IMAGE_SIZE = 32
IMAGE_POLICY: dict[str, Any] = {
    "features": {"image": {"transforms": ["identity"]}},
    "label": "label",
    "dicom": {"retain": ["patient_characteristics"], "image_size": 64, "on_reject": "skip"},
}
PRIVACY_BUDGET = {"epsilon": 10.0, "delta": 1e-5}


def dataset_policy(image_size: int = IMAGE_SIZE, holdout: float = 0.25) -> dict[str, Any]:
    """The data steward's policy for the imaging export: only the image and the label,
    images stored at the plan's grid (no resampling at training time)."""
    return {**IMAGE_POLICY, "dicom": {**IMAGE_POLICY["dicom"], "image_size": image_size},
            "split": {"holdout_fraction": holdout}}


def approval_policy(require_dp: bool, max_epsilon: float = 8.0) -> dict[str, Any]:
    return {
        "auto_approve": True,
        "allowed_models": ["small_cnn"],
        "require_dp": require_dp,
        "require_secure_aggregation": True,
        "min_secure_aggregation_threshold": 2,
        "max_epsilon": max_epsilon,
        "max_delta": 1e-5,
        "approval_lifetime_days": 30,
    }


def imaging_plan(*, image_size: int = IMAGE_SIZE, rounds: int = 5, epsilon: float | None = 8.0,
                 learning_rate: float = 0.05, optimizer: str = "sgd", local_epochs: int = 1,
                 batch_size: int = 16, l2_norm_clip: float = 1.0) -> Plan:
    """The plan the coordinator sends; `epsilon=None` gives a plan without DP-SGD."""
    document: dict[str, Any] = {
        "name": "lesion-cnn", "dataset": DATASET,
        "description": "Binary classifier: does a secondary-capture image show a lesion?",
        "purpose": "Detect a lesion on secondary-capture images (demo data).",
        "model": {"id": "small_cnn", "image_size": image_size},
        "features": [{"name": "image", "transform": "identity"}],
        "label": {"name": "label", "positive_values": ["1"]},
        "client_optimizer": {"name": optimizer, "learning_rate": learning_rate},
        "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "local_epochs": local_epochs, "batch_size": batch_size, "rounds": rounds, "min_silos_per_round": 2,
        "round_deadline_s": 180,
        "secure_aggregation": {"protocol": "secagg", "threshold": 2},
        "seeds": {"model_init": 7, "data_order": 3},
    }
    if epsilon is not None:
        document["dp"] = {"target_epsilon": epsilon, "target_delta": 1e-5, "l2_norm_clip": l2_norm_clip,
                          "accountant": "rdp"}
    return Plan.model_validate(document)


# -- in-process helpers (data-layer tests) ------------------------------------------------
def register_silo(state_dir: Path, export: Path) -> IngestionReport:
    """What hospital IT does once per silo: `silo-node data add chest_images EXPORT --kind dicom`."""
    conn: sqlite3.Connection = open_silo_db(state_dir / "silo.sqlite3")
    try:
        return DatasetRegistry(conn, state_dir / "datasets").add(
            DATASET, export, "dicom", DatasetPolicy.from_document(IMAGE_POLICY))
    finally:
        conn.close()


def silo_views(state_dir: Path, plan: Plan) -> tuple[TrainingView, TrainingView]:
    """(train, test) image views of one silo for `plan`."""
    conn = open_silo_db(state_dir / "silo.sqlite3")
    try:
        registry = DatasetRegistry(conn, state_dir / "datasets")
        return registry.training_view(DATASET, plan, "train"), registry.training_view(DATASET, plan, "test")
    finally:
        conn.close()


def prepare(out: Path, *, hospitals: int = 3, per_hospital: int = 60) -> list[Path]:
    """Generates exports and registers each in its own silo state folder; returns them."""
    states = []
    for summary in write_federation(out / "exports", hospitals=hospitals, per_hospital=per_hospital):
        state = out / "silos" / summary.folder.name
        print(register_silo(state, summary.folder))
        states.append(state)
    return states


# -- the federation -----------------------------------------------------------------------
def _dataset_record(federation: Any, silo_id: str) -> dict[str, Any]:
    """The registry row the silo stored (`silo-node data show` reads the same row)."""
    conn = sqlite3.connect(federation.state_dir(silo_id) / "silo.sqlite3")
    try:
        n_train, n_test, report = conn.execute(
            "SELECT n_train, n_test, report_json FROM datasets WHERE name = ?", (DATASET,)).fetchone()
    finally:
        conn.close()
    return {"n_train": n_train, "n_test": n_test, "report": json.loads(report)}


def _machine() -> dict[str, Any]:
    import os

    from pipelines.machine_info import cpu_model

    cpu = cpu_model(platform.processor() or platform.machine())

    return {"cpu": cpu, "cores_visible": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "note": "2 cores shared with other sessions' work; timings are indicative"}


def run_imaging(out: Path, *, hospitals: int = 3, per_hospital: int = 120, rounds: int = 4, dp: bool = True,
                image_size: int = IMAGE_SIZE, burned_in: int = 3, epsilon: float = 8.0,
                learning_rate: float | None = None, local_epochs: int = 3, printer: Any = print,
                timeout_s: float = 900) -> dict[str, Any]:
    """Runs the whole federation in `out` (recreated) and returns the summary it writes."""
    from pipelines.local_federation import local_federation

    started = time.time()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    exports: list[ExportSummary] = write_federation(out / "hospital-exports", hospitals=hospitals,
                                                    per_hospital=per_hospital, size=image_size, burned_in=burned_in)
    printer(f"generated DICOM exports for {len(exports)} hospitals "
            f"({sum(e.instances for e in exports)} instances; headers carry names, MRNs, birth dates, addresses, "
            f"phones, accession numbers, physicians, device serials, a private tag; "
            f"{sum(e.burned_in for e in exports)} declare burned-in annotation)")
    silo_ids = [f"hospital-{h}" for h in range(hospitals)]  # silo ids: [a-z0-9-]
    lr = learning_rate if learning_rate is not None else (0.5 if dp else 0.1)
    plan = imaging_plan(image_size=image_size, rounds=rounds, epsilon=epsilon if dp else None,
                        learning_rate=lr, local_epochs=local_epochs)
    plan_path = out / "plan.json"
    plan_path.write_text(json.dumps(plan.model_dump(mode="json"), indent=2))
    datasets: dict[str, Any] = {}
    with local_federation(out, silo_ids, federation="imaging-demo", printer=printer) as federation:
        printer(f"provisioned federation with CA and startup kits in {out / 'federation'}")
        for silo_id, export in zip(silo_ids, exports):
            federation.set_approval_policy(silo_id, approval_policy(require_dp=dp))
            text = federation.register_dataset(silo_id, DATASET, export.folder, dataset_policy(image_size), kind="dicom")
            printer(f"--- {silo_id}: silo-node data add {DATASET} {export.folder} --kind dicom --policy ... ---")
            printer(text.rstrip())
            federation.silo_cli(silo_id, "ledger", "set-budget", DATASET, "--epsilon", str(PRIVACY_BUDGET["epsilon"]),
                                "--delta", str(PRIVACY_BUDGET["delta"]))
            record = _dataset_record(federation, silo_id)
            datasets[silo_id] = {
                "export": {"instances": export.instances, "positives": export.positives, "burned_in": export.burned_in},
                "ingested": record["report"]["instances"], "n_train": record["n_train"], "n_test": record["n_test"],
                "identifier_attributes_handled": len(record["report"]["identifiers"]),
            }
        aggregator_out = out / "aggregator"
        training_started = time.time()
        aggregator = federation.start_aggregator(plan_path, aggregator_out)
        for silo_id in silo_ids:
            federation.start_silo(silo_id)
        status = _wait_for_aggregator(federation, silo_ids, timeout_s)
        for silo_id in silo_ids:
            federation.wait(silo_id, timeout_s=60)
        training_s = time.time() - training_started
        if status != 0:
            raise RuntimeError(f"imaging federation failed: the aggregator exited with {status}:\n"
                               + "\n".join(aggregator.lines[-30:]))
        report = federation.run_report(aggregator_out)
        trained_records = {s: _trained_records(federation.members[s].lines) for s in silo_ids}
        state_dirs = {s: str(federation.state_dir(s)) for s in silo_ids}
    evaluation = report["evaluation"]
    per_silo = evaluation.get("per_silo", {})
    accuracies = [m["accuracy"] for m in per_silo.values() if "accuracy" in m]
    aucs = [m["auc"] for m in per_silo.values() if "auc" in m]
    summary = {
        "pipeline": "imaging",
        "rounds_planned": rounds,
        "rounds_completed": report["rounds_completed"],
        "silos": silo_ids,
        "model": plan.model.model_dump(mode="json"),
        "plan_hash": report["plan_hash"],
        "datasets": {s: {**datasets[s], "records_trained_per_round": trained_records[s]} for s in silo_ids},
        "held_out": {
            "per_silo": per_silo,
            "aggregate": evaluation.get("aggregate", {}),
            "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
            "mean_auc": sum(aucs) / len(aucs) if aucs else None,
            "chance_accuracy": {s: max(p := datasets[s]["export"]["positives"] / datasets[s]["export"]["instances"], 1 - p)
                                for s in silo_ids},
        },
        "training_per_round": report["round_metrics"],
        "secure_aggregation": report.get("secure_aggregation_details"),
        "dp": ({**plan.dp.model_dump(mode="json"), "budget_per_dataset": PRIVACY_BUDGET,
                "declared_by_silos": report.get("dp_declarations", {})} if plan.dp else None),
        "approval_policy": approval_policy(require_dp=dp),
        "model_path": report.get("model_path"),
        "state_dirs": state_dirs,
        "round_seconds": [round(s, 3) for s in report["round_seconds"]],
        "federation_seconds": round(training_s, 1),
        "duration_s": round(time.time() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _wait_for_aggregator(federation: Any, silo_ids: list[str], timeout_s: float) -> int:
    """The aggregator's exit status; fails fast (with the silos' last log lines) when every
    silo process has exited with an error while the aggregator still waits for them."""
    deadline = time.time() + timeout_s
    aggregator = federation.members["aggregator"].process
    while time.time() < deadline:
        status = aggregator.poll()
        if status is not None:
            return int(status)
        silos = [federation.members[s].process.poll() for s in silo_ids]
        if all(code not in (None, 0) for code in silos):
            tails = "\n".join(f"[{s}] " + "\n".join(federation.members[s].lines[-5:]) for s in silo_ids)
            raise RuntimeError(f"every silo process exited with an error before the plan finished:\n{tails}")
        time.sleep(1.0)
    raise RuntimeError(f"the imaging federation did not finish within {timeout_s:.0f}s")


def _trained_records(lines: list[str]) -> list[int]:
    """`round N: trained on K records` lines from a silo's log, in order."""
    import re

    return [int(m.group(1)) for line in lines if (m := re.search(r"trained on (\d+) records", line))]


def write_bench(summary: dict[str, Any], command: str, path: Path = Path("bench-results/imaging.json")) -> None:
    held_out = summary["held_out"]
    bench = {
        "benchmark": "imaging_federation",
        "command": command,
        "what": "small_cnn on synthetic DICOM (class-dependent lesion), 3 hospital silos as OS processes on loopback "
                "over mutual TLS; Annex E de-identification on ingestion; secure aggregation"
                + (" + record-level DP-SGD" if summary["dp"] else ""),
        "model": summary["model"],
        "rounds": summary["rounds_completed"],
        "dp": summary["dp"] and {k: summary["dp"][k] for k in ("target_epsilon", "target_delta", "l2_norm_clip")},
        "per_silo": {s: {"accuracy": m.get("accuracy"), "auc": m.get("auc"), "n_test": summary["datasets"][s]["n_test"],
                         "n_train": summary["datasets"][s]["n_train"], "chance_accuracy": held_out["chance_accuracy"][s]}
                     for s, m in held_out["per_silo"].items()},
        "mean_accuracy": held_out["mean_accuracy"],
        "mean_auc": held_out["mean_auc"],
        "aggregate": held_out["aggregate"],
        "round_seconds": summary["round_seconds"],
        "federation_seconds": summary["federation_seconds"],
        "wall_time_s": summary["duration_s"],
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bench, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.imaging", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/imaging"), help="work folder (recreated)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-hospital", type=int, default=120)
    parser.add_argument("--local-epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--no-dp", action="store_true", help="secure aggregation only (approval policy require_dp: false)")
    parser.add_argument("--bench", default="bench-results/imaging.json",
                        help="where to write the benchmark record ('' to skip)")
    args = parser.parse_args(argv)
    summary = run_imaging(args.out, per_hospital=args.per_hospital, rounds=args.rounds, dp=not args.no_dp,
                          epsilon=args.epsilon, learning_rate=args.learning_rate, local_epochs=args.local_epochs)
    if args.bench:
        write_bench(summary, " ".join([".venv/bin/python -m pipelines.imaging", *(argv if argv is not None else sys.argv[1:])]),
                    Path(args.bench))
    held_out = summary["held_out"]
    for silo_id, metrics in held_out["per_silo"].items():
        print(f"{silo_id}: held-out accuracy {metrics.get('accuracy', float('nan')):.3f}, AUC {metrics.get('auc', float('nan')):.3f} "
              f"(n={summary['datasets'][silo_id]['n_test']}, chance {held_out['chance_accuracy'][silo_id]:.3f})")
    print(f"imaging federation finished in {summary['duration_s']:.0f}s: {summary['rounds_completed']} rounds, "
          f"mean held-out accuracy {held_out['mean_accuracy']:.3f}, mean AUC {held_out['mean_auc']:.3f}; "
          f"summary at {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
