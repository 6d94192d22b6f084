"""Settings checked at start-up: every key our YAMLs declare refuses a bad value, naming it."""
import pytest
from helpers import run_script

from recbole_micro.errors import SettingsError
from recbole_micro.registry import our_model_names, properties_dir
from recbole_micro.settings import check_settings, parse_spec, read_settings

ROOT = properties_dir()
FILES = [ROOT / "overall.yaml", *sorted((ROOT / "model").glob("*.yaml"))]


def bad_values(setting):
    """One value of the wrong type, and one of the right type that the rule refuses (if any)."""
    wrong_type = {"int": 1.5, "float": "fast", "bool": "yes", "str": 3, "list": "x", "dict": 3}[setting.type]
    values = [wrong_type] + ([] if setting.allow_empty else [None])
    rule = setting.rule
    if rule.startswith("one of"):
        values.append("not-a-choice")
    elif rule.startswith(">=") or rule.startswith(">"):
        bound = float(rule.split()[1])
        values.append((int(bound) - 1 if rule.startswith(">=") else int(bound)) if setting.type == "int"
                      else (bound - 0.5 if rule.startswith(">=") else bound))
    elif rule.startswith("in"):
        values.append(float(rule.split(",")[1].strip(" ])")) + 0.5)
    return values


CASES = [(path.name, key, value) for path in FILES for key, setting in read_settings([path]).items()
         for value in bad_values(setting)]


def test_every_default_in_our_yamls_declares_what_it_allows():
    for path in FILES:
        keys = [line.split(":")[0] for line in path.read_text().splitlines() if line[:1].isalpha() and "#" in line]
        assert set(keys) == set(read_settings([path])), path  # no default without a readable spec


@pytest.mark.parametrize("yaml_name, key, value", CASES, ids=[f"{f}-{k}-{v!r}" for f, k, v in CASES])
def test_a_bad_value_names_the_key_the_value_what_is_allowed_and_the_yaml(yaml_name, key, value):
    settings = read_settings([ROOT / "overall.yaml", ROOT / "model" / yaml_name] if yaml_name != "overall.yaml"
                             else [ROOT / "overall.yaml"])
    with pytest.raises(SettingsError) as err:
        check_settings({key: value}, settings, root=ROOT)
    message = str(err.value)
    assert message.startswith(f"{key} is {value!r}; allowed: ") and "\n" not in message
    assert f"(the default is in properties/{'' if yaml_name == 'overall.yaml' else 'model/'}{yaml_name})" in message


@pytest.mark.parametrize("spec, good, bad", [
    ("int, >= 1", [1, 7], [0, -3, 1.0, True, None]),
    ("float, in [0, 1]", [0, 0.5, 1], [1.7, -0.1, float("nan"), "0.5"]),
    ("float, in (0, 1]", [1, 0.3], [0, 1.01]),
    ("float, in [0, 1)", [0, 0.99], [1, -1]),
    ("float, > 0", [1e-9, 3], [0, -1, float("inf")]),
    ("str, one of: mean, sum", ["mean", "sum"], ["foo", "Mean", None]),
    ("int or empty, >= 1", [None, 4], [0, "4"]),
    ("bool", [True, False], [1, "True"]),
])
def test_rules_on_hand_picked_values(spec, good, bad):
    setting = parse_spec("k", spec, "x.yaml")
    assert [setting.problem(v) for v in good] == [None] * len(good)
    assert all(setting.problem(v) for v in bad)


def test_every_model_builds_a_config_with_its_defaults_and_the_official_profile(tiny):
    from recbole_micro.config import Config

    for model in [*our_model_names(), "LightGCN"]:
        Config(model=model, dataset="tiny", config_dict=tiny.config_dict())  # no SettingsError
        Config(model=model, dataset="ml-100k", config_file_list=[str(ROOT / "profiles" / "official.yaml")])


def test_the_script_refuses_a_bad_setting_in_one_line_before_loading_data(tiny):
    config_file = tiny.write_config()
    for flag, line in [
        ("--cl_reduce=foo", "error: cl_reduce is 'foo'; allowed: one of 'mean', 'sum' (the default is in properties/model/MICRO.yaml)."),
        ("--knn_k=-3", "error: knn_k is -3; allowed: an int >= 1 (the default is in properties/model/MICRO.yaml)."),
        ("--lambda_coeff=1.7", "error: lambda_coeff is 1.7; allowed: a float in [0, 1] (the default is in properties/model/MICRO.yaml)."),
    ]:
        result = run_script("-m", "MICRO", "-d", "tiny", f"--config_files={config_file}", flag, cwd=tiny.root)
        assert result.returncode == 2 and result.stderr.strip() == line, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and not (tiny.root / "saved").exists()  # before any data or model


def test_compare_mode_checks_every_row_before_the_first_run(tiny):
    config_file = tiny.write_config()
    result = run_script("-d", "tiny", f"--config_files={config_file}", "--compare", "VBPR", "MICRO:tau=0",
                        "--seeds", "1", "--out", str(tiny.root / "cmp"), cwd=tiny.root)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: tau is 0; allowed: a float > 0 (the default is in properties/model/MICRO.yaml)."
    assert not (tiny.root / "cmp").exists()  # VBPR did not run first


def test_a_setting_name_no_yaml_defines_is_reported_with_the_nearest_name(tiny, capsys, monkeypatch):
    import recbole_micro.config as config
    from recbole_micro.config import Config

    monkeypatch.setattr(config, "_WARNED", set())  # each warning is said once per process

    Config(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(lambda_coef=0.5, zz_local_option=1))
    err = capsys.readouterr().err
    assert "'lambda_coef' is not a setting of RecBole or recbole-micro" in err
    assert "did you mean 'lambda_coeff'?" in err
    assert "'zz_local_option' is not a setting" in err and "did you mean" not in err.split("zz_local_option")[1]
    Config(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(knn_k=5, learning_rate=0.01, nproc=1, k=3))
    err = capsys.readouterr().err  # ours, RecBole's (ItemKNN's k included), the launcher's: all known names
    assert "not a setting of RecBole" not in err
    # ... but ItemKNN's k is not MICRO's: said once, as a setting with no effect on this run
    assert err.count("warning") == 1 and "'k' is set, but MICRO does not use it" in err
