"""What a non-editable install ships: the package, the importers, the YAML defaults and the params files."""
import os
import subprocess
import sys
import zipfile

import pytest
from helpers import REPO

from recbole_micro.errors import ParamsFileError
from recbole_micro.registry import find_params_file, hyper_dir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("recbole_micro-*.whl")
    return path


def test_the_wheel_holds_the_importers_the_defaults_and_every_params_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    importers = {p.name for p in (REPO / "dataset_prep").glob("*.py")}
    assert {n.split("/")[1] for n in names if n.startswith("dataset_prep/")} == importers
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "hyper").rglob("*.hyper")}
    assert shipped and {f"recbole_micro/{p}" for p in shipped} <= names
    yamls = {str(p.relative_to(REPO / "properties")) for p in (REPO / "properties").rglob("*.yaml")}
    assert {f"recbole_micro/properties/{p}" for p in yamls} <= names
    modules = {str(p.relative_to(REPO)) for p in (REPO / "recbole_micro").rglob("*.py")}
    assert modules <= names


def test_after_install_the_run_script_and_the_importers_work_outside_the_checkout(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                                "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run("-c", "import recbole_micro, dataset_prep; print(recbole_micro.__file__); print(dataset_prep.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout  # not the checkout
    script = run(str(target / "bin" / "run_recbole_micro.py"), "--help")
    assert script.returncode == 0 and "--compare" in script.stdout, script.stderr
    importer = run("-m", "dataset_prep.import_pickled", "--help")
    assert importer.returncode == 0 and "--out" in importer.stdout, importer.stderr
    found = run("-c", "from recbole_micro.registry import find_params_file, properties_dir; "
                      "print(find_params_file('MICRO')); print(properties_dir())")
    assert found.returncode == 0, found.stderr
    params, properties = found.stdout.split()
    assert params == str(target / "recbole_micro" / "hyper" / "MICRO.hyper")
    assert properties == str(target / "recbole_micro" / "properties")


def test_a_params_file_is_found_by_path_or_by_the_name_of_a_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: hyper/ is not in the current folder
    shipped = hyper_dir()
    assert find_params_file("MICRO") == shipped / "MICRO.hyper"
    assert find_params_file("LightGCN.hyper") == shipped / "LightGCN.hyper"
    assert find_params_file("hyper/MICRO.hyper") == shipped / "MICRO.hyper"
    assert find_params_file("sensitivity/MICRO-knn_k") == shipped / "sensitivity" / "MICRO-knn_k.hyper"
    own = tmp_path / "mine.hyper"
    own.write_text("learning_rate choice [0.001]\n")
    assert find_params_file(str(own)) == own and find_params_file("mine.hyper") == own.relative_to(tmp_path)
    with pytest.raises(ParamsFileError, match="MICRO-knn_k"):  # the message lists what is shipped
        find_params_file("NoSuchModel")
    with pytest.raises(ParamsFileError, match="is a folder"):
        find_params_file(str(tmp_path))


def test_tune_with_an_unknown_params_file_is_one_line_before_anything_runs(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "run_recbole_micro.py"), "-m", "MICRO", "-d", "ml-100k",
                          "--tune", "NoSuchGrid"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: params file NoSuchGrid not found") and "MICRO" in line
    assert not (tmp_path / "tune").exists()
