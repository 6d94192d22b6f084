"""The foundation check at scale: our CF backbone (LATTICE with use_item_graph False)
against RecBole's LightGCN on the same split, seed and initial embeddings.

Three rows train for ``--epochs`` epochs each and record the validation Recall@20 after every
epoch: RecBole's LightGCN as shipped (``require_pow: False``, the unsquared L2 norm), RecBole's
LightGCN with ``require_pow: True`` (the squared L2 the papers and our models use), and our
backbone alone, which starts from the first row's embeddings. The JSON lands after each row; a
re-run skips the rows it has.

Example (Scientific, 20 epochs at LightGCN's tuned point there, lr 1e-3 and L2 1e-5: about 10 min on the project's 2-core CPU):
    python benchmarks/backbone_parity.py -d scientific --epochs 20 --out benchmarks/results/backbone-parity/scientific.json
"""
import argparse
import json
import time
from pathlib import Path

import torch
from recbole.data import data_preparation

from recbole_micro.config import Config
from recbole_micro.registry import create_dataset, get_model, get_trainer, init_seed

ROWS = {  # name -> (model, settings)
    "LightGCN (RecBole, require_pow False)": ("LightGCN", {"require_pow": False}),
    "LightGCN (RecBole, require_pow True)": ("LightGCN", {"require_pow": True}),
    "LATTICE backbone (use_item_graph False)": ("LATTICE", {"use_item_graph": False}),
}


def build(model_name, dataset_name, settings):
    config = Config(model=model_name, dataset=dataset_name,
                    config_dict={"show_progress": False, "state": "WARNING", **settings})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    return config, get_model(model_name)(config, train._dataset).to(config["device"]), train, valid


def curve(config, model, train, valid, epochs):
    """Validation Recall@20 after each of ``epochs`` epochs, from the same sampler state."""
    init_seed(config["seed"], config["reproducibility"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    scores = []
    for epoch in range(epochs):
        trainer._train_epoch(train, epoch, show_progress=False)
        scores.append(round(float(trainer.evaluate(valid, load_best_model=False)["recall@20"]), 6))
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", default="scientific")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--reg_weight", type=float, default=1e-5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else {}
    reference = None  # the first row's initial embeddings
    for name, (model_name, settings) in ROWS.items():
        config, model, train, valid = build(model_name, args.dataset, {
            **settings, "n_layers": 2, "cf_n_layers": 2, "learning_rate": args.learning_rate, "reg_weight": args.reg_weight})
        if reference is None:
            reference = (model.user_embedding.weight.detach().clone(), model.item_embedding.weight.detach().clone())
        with torch.no_grad():
            model.user_embedding.weight.copy_(reference[0])
            model.item_embedding.weight.copy_(reference[1])
        if name in results and len(results[name]["valid_recall@20"]) >= args.epochs:
            continue
        start = time.time()
        scores = curve(config, model, train, valid, args.epochs)
        results[name] = {"valid_recall@20": scores, "seconds": round(time.time() - start, 1),
                         "reg_weight": config["reg_weight"], "learning_rate": config["learning_rate"]}
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: valid Recall@20 per epoch {scores}", flush=True)


if __name__ == "__main__":
    main()
