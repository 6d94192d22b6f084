"""run_recbole_micro.py as users call it (a subprocess), and the packaging of the YAMLs."""
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, run_script


def assert_summary(output, model):
    lines = output.strip().splitlines()[-3:]
    assert lines[0].split() == ["recall@20", "ndcg@20", "precision@20"], output[-2000:]
    for split, line in zip(("valid", "test"), lines[1:]):
        fields = line.split()
        assert fields[0] == split and len(fields) == 4
        assert all(0.0 <= float(v) <= 1.0 for v in fields[1:])
    assert f"{model} on tiny" in output


@pytest.mark.parametrize("model", ["VBPR", "MMGCN", "GRCN", "LightGCN", "BPR", "ItemKNN", "NGCF", "SGL"])
def test_script_trains_ours_and_the_papers_recbole_baselines(tiny, model):
    config_file = tiny.write_config()
    result = run_script(f"--model={model}", "-d", "tiny", f"--config_files={config_file}", "--epochs=1", cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_summary(result.stdout, model)
    assert list((tiny.root / "saved").glob(f"{model}-*.pth"))


@pytest.mark.parametrize("model", ["LATTICE", "MICRO"])
@pytest.mark.parametrize("cf_model", ["lightgcn", "mf", "ngcf"])
def test_script_trains_graph_models_on_every_backbone(tiny, model, cf_model):
    config_file = tiny.write_config(knn_k=4)
    result = run_script(f"--model={model}", "--dataset=tiny", f"--config_files={config_file}", "--epochs=1",
                        f"--cf_model={cf_model}", cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_summary(result.stdout, model)


def test_key_value_flags_reach_recbole(tiny):
    config_file = tiny.write_config()
    result = run_script("-m", "VBPR", "-d", "tiny", f"--config_files={config_file}", "--embedding_size=8",
                        "--state=INFO", cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(item_embedding): Embedding(33, 8)" in result.stdout + result.stderr


def test_no_recbole_flag_is_taken_for_an_abbreviation_of_ours():
    sys.path.insert(0, str(REPO))
    from run_recbole_micro import build_parser, parse_args

    parser_flags = [flag for action in build_parser()._actions for flag in action.option_strings
                    if flag.startswith("--") and flag != "--help"]
    assert {"--seeds", "--resume", "--max_evals"} <= set(parser_flags)
    # a flag that is a strict prefix of each of ours, as RecBole settings could be named (--seed of --seeds)
    prefixes = [f"{flag[:-1]}=1" for flag in parser_flags]
    args, rest = parse_args(["--seed=7", "--epochs=3", *prefixes])
    assert rest == ["--seed=7", "--epochs=3", *prefixes]
    assert args.seeds == [2020, 2021, 2022] and args.model == "MICRO" and args.compare is None and args.tune is None


def test_seed_and_epochs_flags_reach_the_config(tiny):
    config_file = tiny.write_config()
    result = run_script("-m", "VBPR", "-d", "tiny", f"--config_files={config_file}", "--seed=7", "--epochs=3",
                        "--state=INFO", cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert re.search(r"^seed = 7$", output, re.M) and re.search(r"^epochs = 3$", output, re.M)
    assert "epoch 2 training" in output and "epoch 3 training" not in output


def test_unknown_model_exits_non_zero_and_lists_ours(tiny):
    result = run_script("--model=Foo", cwd=tiny.root)
    assert result.returncode == 2
    assert "Unknown model 'Foo'" in result.stderr and "VBPR" in result.stderr


def test_unprepared_dataset_says_what_is_expected(tiny):
    result = run_script("--model=VBPR", "--dataset=baby", cwd=tiny.root)
    assert result.returncode == 2
    assert "Dataset 'baby' is not prepared" in result.stderr
    assert str(tiny.root / "dataset" / "baby" / "baby.train.inter") in result.stderr
    assert "Traceback" not in result.stderr


def test_non_editable_install_finds_the_yamls(tmp_path):
    """`pip install .` (not editable) ships properties/ inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(REPO)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next(wheel_dir.glob("recbole_micro-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for path in ("recbole_micro/properties/overall.yaml", "recbole_micro/properties/model/VBPR.yaml",
                 "recbole_micro/properties/dataset/ml-100k.yaml"):
        assert path in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = (
        "import sys; sys.argv=['x']\n"
        "from recbole_micro.registry import properties_dir\n"
        "from recbole_micro.config import Config\n"
        "c = Config(model='VBPR', dataset='ml-100k')\n"
        "print(properties_dir()); print(c['valid_metric'], c['feat_embedding_size'], sorted(c['modalities']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    where, values = out.stdout.strip().splitlines()[-2:]
    assert Path(where) == target / "recbole_micro" / "properties"
    assert values == "Recall@20 64 ['knowledge', 'textual']"
