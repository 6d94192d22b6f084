"""What compare and tune share: metric columns, CSV rows, fixed.yaml."""
import csv

import yaml

from recbole_micro.experiments.reports import write_fixed_yaml, write_rows_csv
from recbole_micro.quick_start import metric_columns


def test_metric_columns_prefix_each_split_and_accept_a_missing_one():
    result = {"best_valid_result": {"recall@20": 0.3, "ndcg@20": 0.2}, "test_result": {"recall@20": 0.4}}
    assert metric_columns(result) == {"valid_recall@20": 0.3, "valid_ndcg@20": 0.2, "test_recall@20": 0.4}
    assert metric_columns({"best_valid_result": None, "test_result": None}) == {}


def test_rows_csv_has_every_key_in_first_seen_order(tmp_path):
    path = tmp_path / "rows.csv"
    write_rows_csv([{"a": 1, "b": 2}, {"c": 3, "a": 4}], path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["a", "b", "c"], ["1", "2", ""], ["4", "", "3"]]


def test_fixed_yaml_names_model_and_dataset(tmp_path):
    path = write_fixed_yaml(tmp_path, "MICRO", "ml-100k")
    assert path == tmp_path / "fixed.yaml"
    assert yaml.safe_load(path.read_text()) == {"model": "MICRO", "dataset": "ml-100k"}
