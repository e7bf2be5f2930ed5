"""Runs TFF's own `process.next` for a plan on given client datasets and prints the final
model weights as JSON. Executed as a separate process by the fidelity test, because TFF's
runtime spawns a worker_binary that the test must be able to kill with the process group."""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> None:
    plan_path, data_path, out_path = sys.argv[1:4]
    import tensorflow_federated as tff

    from healthfed_common.client_data import training_dataset_factory
    from healthfed_common.learning_process import build_learning_process
    from healthfed_common.plan import parse_plan

    plan = parse_plan(open(plan_path, "rb").read())
    archive = np.load(data_path)
    silos = sorted({key.split("/")[0] for key in archive.files})
    tff.backends.test.set_sync_test_cpp_execution_context()  # secure sums become plain sums
    process = build_learning_process(plan)
    state = process.initialize()
    for round_number in range(1, plan.rounds + 1):
        datasets = [
            training_dataset_factory(archive[f"{s}/features"], archive[f"{s}/labels"], plan, round_number)()
            for s in silos
        ]
        state = process.next(state, datasets).state
    weights = process.get_model_weights(state)
    arrays = [np.asarray(w).tolist() for w in list(weights.trainable) + list(weights.non_trainable)]
    with open(out_path, "w") as handle:
        json.dump(arrays, handle)


if __name__ == "__main__":
    main()
