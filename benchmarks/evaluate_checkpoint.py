"""Evaluate a saved checkpoint on its validation and test splits, in a fresh process.

Useful when a run was interrupted after it saved its best model: RecBole saves the best
checkpoint at every improvement of the validation score, so the test score of the best epoch so
far can still be read. The dataset, split and model are rebuilt from the checkpoint's own Config.

Example:
    python benchmarks/evaluate_checkpoint.py saved/MICRO-Nov-23-2026_14-26-07-37a0f407.pth \\
        --out benchmarks/results/ml-100k-ngcf-patience/checkpoint-eval.json
"""
import argparse
import json
import sys
from pathlib import Path

from recbole_micro.errors import RecBoleMicroError
from recbole_micro.quick_start import load_data_and_model
from recbole_micro.registry import get_trainer


def evaluate_checkpoint(model_file, trust_checkpoint=False):
    """Valid and test metrics of ``model_file``'s weights, with the run's settings."""
    config, model, _, _, valid_data, test_data = load_data_and_model(model_file, trust_checkpoint=trust_checkpoint)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return {
        "checkpoint": str(model_file),
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "valid": dict(trainer.evaluate(valid_data, load_best_model=False)),
        "test": dict(trainer.evaluate(test_data, load_best_model=False)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .pth file written by run_recbole_micro.py")
    parser.add_argument("--out", help="also write the result as JSON here")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="also read a pickled (RecBole-format) checkpoint, which can run code")
    args = parser.parse_args(argv)
    try:
        result = evaluate_checkpoint(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    except RecBoleMicroError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
