"""Why MICRO / LATTICE do or do not beat LightGCN on a dataset: the measures of
:mod:`recbole_micro.experiments.diagnostics` on a dataset's raw graphs, a trained checkpoint (``--checkpoint``)
and a run's log (``--log``). Writes one JSON file.

Example (Scientific, graphs only: about 1 min on the project's 2-core CPU):
    python benchmarks/diagnose_graphs.py -d scientific --out benchmarks/results/diagnose/scientific-graphs.json
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_micro.experiments.diagnostics import (
    losses_from_log,
    quality,
    trained_model_diagnostics,
    training_item_users,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", default="scientific")
    parser.add_argument("--checkpoint", default=None, help="a MICRO or LATTICE checkpoint of this dataset")
    parser.add_argument("--log", default=None, help="the run's log file (L_C, L_S and validation per epoch)")
    parser.add_argument("--seed", type=int, default=0, help="for the random pairs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.model.layers import knn_graph
    from recbole_micro.quick_start import load_data_and_model
    from recbole_micro.registry import create_dataset

    rng = np.random.default_rng(args.seed)
    if args.checkpoint:
        config, model, dataset, train, _, _ = load_data_and_model(args.checkpoint)
    else:
        config = Config(model="MICRO", dataset=args.dataset, config_dict={"state": "WARNING"})
        dataset = create_dataset(config)
        train, _, _ = data_preparation(config, dataset)
        model = None
    item_users, items = training_item_users(train)
    result = {"dataset": config["dataset"], "knn_k": config["knn_k"], "items_with_training_users": int(len(items)),
              "raw graphs": {}}
    for m, feat in dataset.item_modalities.items():
        graph = knn_graph(torch.as_tensor(np.asarray(feat), dtype=torch.float32), config["knn_k"])
        result["raw graphs"][m] = quality(item_users, graph, items, rng)
    if model is not None:
        result["checkpoint"] = str(args.checkpoint)
        result["trained"] = trained_model_diagnostics(model, item_users, items, rng)
    if args.log:
        result["log"] = losses_from_log(args.log)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
