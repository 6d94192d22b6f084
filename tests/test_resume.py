"""Resume: a run killed after an epoch and resumed ends exactly as the uninterrupted run."""
import pytest
import torch

from recbole_micro.errors import ResumeError
from recbole_micro.quick_start import run_recbole_micro
from recbole_micro.trainer.checkpoints import load_checkpoint
from recbole_micro.trainer.trainer import CheckpointMixin, resume_file_of


class Killed(Exception):
    """Stands in for the process being killed."""


def kill_after(monkeypatch, last_epoch):
    """Make the run die right after it saved the resume state of ``last_epoch``."""
    save = CheckpointMixin.save_resume_state

    def save_then_die(self, epoch_idx, train_data):
        save(self, epoch_idx, train_data)
        if epoch_idx == last_epoch:
            raise Killed(epoch_idx)

    monkeypatch.setattr(CheckpointMixin, "save_resume_state", save_then_die)


def outcome(result):
    weights = load_checkpoint(result["saved_model_file"])["state_dict"]
    return (result["best_valid_score"], dict(result["best_valid_result"]), dict(result["test_result"])), weights


@pytest.mark.parametrize("model, settings", [("MICRO", {}), ("LATTICE", {"lr_decay": 0.9, "lr_decay_epochs": 1}),
                                             ("LightGCN", {})])
def test_killed_after_epoch_2_and_resumed_equals_4_epochs_straight(tiny, monkeypatch, model, settings):
    config = tiny.config_dict(epochs=4, stopping_step=10, **settings)
    straight, straight_weights = outcome(run_recbole_micro(model=model, dataset="tiny", config_dict=config))
    checkpoints = []
    with monkeypatch.context() as patch:
        kill_after(patch, last_epoch=1)  # epochs 0 and 1 done
        with pytest.raises(Killed):
            run_recbole_micro(model=model, dataset="tiny", config_dict=config, started=checkpoints.append)
    assert resume_file_of(checkpoints[0]).is_file()
    before = torch.load(resume_file_of(checkpoints[0]), weights_only=True)["fit_seconds"]
    result = run_recbole_micro(model=model, dataset="tiny", config_dict=config, resume=checkpoints[0])
    assert result["seconds_before_resume"] == before > 0  # the killed start's training time is kept
    resumed, resumed_weights = outcome(result)
    assert resumed == straight
    for name, tensor in straight_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name


def test_a_kill_while_the_state_is_written_leaves_the_previous_one(tiny, monkeypatch):
    config = tiny.config_dict(epochs=4, stopping_step=10)
    checkpoints, real_save = [], torch.save

    def save_or_die_at_epoch_2(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            open(path, "wb").write(b"half a file")
            raise Killed("during the write")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_or_die_at_epoch_2)
    with pytest.raises(Killed):
        run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config, started=checkpoints.append)
    state = torch.load(resume_file_of(checkpoints[0]), weights_only=True)  # loads without running code
    assert state["epoch"] == 1 and state["fit_seconds"] > 0  # the training time so far travels with the state
    assert sorted(p.name for p in resume_file_of(checkpoints[0]).parent.iterdir() if "tmp" in p.name) == []


def test_resuming_without_a_state_or_from_another_model_is_a_clear_error(tiny):
    config = tiny.config_dict(epochs=1)
    with pytest.raises(ResumeError, match="No resume state at .*nothing.resume.pth"):
        run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config, resume=str(tiny.root / "nothing.pth"))
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config)
    with pytest.raises(ResumeError, match="is a VBPR run; this run is MICRO"):
        run_recbole_micro(model="MICRO", dataset="tiny", config_dict=config, resume=result["saved_model_file"])


def test_compare_mode_resumes_an_interrupted_run_from_its_last_epoch(tiny, monkeypatch):
    from recbole_micro.experiments.compare import run_comparison
    from recbole_micro.experiments.records import read_runs

    config = tiny.config_dict(epochs=4, stopping_step=10)
    straight = run_comparison(["VBPR"], "tiny", [5], tiny.root / "straight", config_dict=config, log=lambda *_: None)
    with monkeypatch.context() as patch:
        kill_after(patch, last_epoch=1)
        with pytest.raises(Killed):
            run_comparison(["VBPR"], "tiny", [5], tiny.root / "cut", config_dict=config, log=lambda *_: None)
    assert read_runs(tiny.root / "cut") == [] and (tiny.root / "cut" / "running.json").is_file()
    lines = []
    resumed = run_comparison(["VBPR"], "tiny", [5], tiny.root / "cut", config_dict=config, log=lines.append)
    assert any(line.startswith("VBPR seed 5: resuming ") for line in lines)
    metrics = lambda rows: {k: v for k, v in rows[0].items() if k.startswith(("valid_", "test_"))}  # noqa: E731
    assert metrics(resumed) == metrics(straight)
    assert "VBPR seed 5" not in (tiny.root / "cut" / "running.json").read_text()  # finished: forgotten


def test_resuming_a_run_whose_best_model_is_pickled_needs_trust_and_says_so_before_training(tiny, monkeypatch):
    config = tiny.config_dict(epochs=3, stopping_step=10)
    checkpoints = []
    with monkeypatch.context() as patch:
        kill_after(patch, last_epoch=0)
        with pytest.raises(Killed):
            run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config, started=checkpoints.append)
    best = checkpoints[0]
    plain = load_checkpoint(best)
    torch.save(dict(plain, config=plain["config"]), best, pickle_protocol=4)  # as an older version wrote it
    with pytest.raises(ResumeError, match="best model cannot be reloaded.*--trust-checkpoint"):
        run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config, resume=best)
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=config, resume=best, trust_checkpoint=True)
    assert result["test_result"] is not None


def test_a_tuning_run_interrupted_mid_way_resumes_from_its_last_epoch(tiny, monkeypatch):
    from recbole_micro.experiments.tuned_compare import parse_grid, read_trials, run_tuned_comparison

    config = tiny.config_dict(epochs=4, stopping_step=10)
    grid = parse_grid("learning_rate=1e-3")

    def tuned(out, log=lambda *_: None):
        return run_tuned_comparison(["VBPR"], "tiny", [5], tiny.root / out, grid=grid, config_dict=config, log=log)

    _, straight = tuned("straight")
    with monkeypatch.context() as patch:
        kill_after(patch, last_epoch=1)
        with pytest.raises(Killed):
            tuned("cut")
    assert read_trials(tiny.root / "cut") == []
    lines = []
    _, resumed = tuned("cut", lines.append)
    assert any(line.startswith("VBPR:learning_rate=0.001 seed 5: resuming ") for line in lines)
    trial = lambda chosen: {k: v for k, v in chosen["VBPR"].items() if k != "seconds"}  # noqa: E731
    assert trial(resumed) == trial(straight)


def test_a_resumed_runs_kept_log_holds_every_start_in_order(tiny, monkeypatch):
    import json

    import recbole_micro.experiments.records as records
    from recbole_micro.experiments.compare import run_comparison
    from recbole_micro.experiments.records import read_runs

    config = tiny.config_dict(epochs=3, stopping_step=10)
    out = tiny.root / "cut"
    logs = [tiny.root / "first.log", tiny.root / "second.log"]
    logs[0].write_text("the first start\n")
    logs[1].write_text("the second start\n")
    with monkeypatch.context() as patch:
        patch.setattr(records, "log_file", lambda: logs[0])
        kill_after(patch, last_epoch=0)
        with pytest.raises(Killed):
            run_comparison(["VBPR"], "tiny", [5], out, config_dict=config, log=lambda *_: None)
    entry = json.loads((out / "running.json").read_text())["VBPR seed 5"]
    assert entry["logs"] == [str(logs[0])]
    (out / "running.json").write_text(json.dumps({"VBPR seed 5": entry["checkpoint"]}))  # as an older version wrote it
    monkeypatch.setattr(records, "log_file", lambda: logs[1])
    lines = []
    run_comparison(["VBPR"], "tiny", [5], out, config_dict=config, log=lines.append)
    assert any("resuming" in line for line in lines)  # the older entry still resumes
    (row,) = read_runs(out)
    assert (out / row["log"]).read_text() == "the second start\n"  # the older entry named no earlier log
    # a run resumed with the new entries keeps both starts
    out2 = tiny.root / "cut2"
    with monkeypatch.context() as patch:
        patch.setattr(records, "log_file", lambda: logs[0])
        kill_after(patch, last_epoch=0)
        with pytest.raises(Killed):
            run_comparison(["VBPR"], "tiny", [5], out2, config_dict=config, log=lambda *_: None)
    run_comparison(["VBPR"], "tiny", [5], out2, config_dict=config, log=lambda *_: None)
    (row,) = read_runs(out2)
    assert (out2 / row["log"]).read_text() == "the first start\nthe second start\n"


def twin_dataset(tiny, name):
    """A copy of the tiny dataset's files under another dataset name, with its settings; shapes identical."""
    folder = tiny.root / name
    folder.mkdir()
    for path in tiny.dir.iterdir():
        (folder / path.name.replace("tiny.", f"{name}.", 1)).write_bytes(path.read_bytes())
    modalities = {m: {"file": f"{name}.{m}.npy", "tokens": f"{name}.{m}.tokens"} for m in ("visual", "textual")}
    return folder, modalities


def swap_one_interaction(inter_file):
    """Point the last interaction at another item the user has not got: same users, items and counts."""
    lines = inter_file.read_text().splitlines()
    user, item = lines[-1].split("\t")[:2]
    taken = {line.split("\t")[1] for line in lines[1:] if line.split("\t")[0] == user}
    other = next(line.split("\t")[1] for line in lines[1:] if line.split("\t")[1] not in taken)
    lines[-1] = lines[-1].replace(f"\t{item}\t", f"\t{other}\t", 1)
    inter_file.write_text("\n".join(lines) + "\n")


def started_run(tiny, **settings):
    """The checkpoint of a 2-epoch VBPR run on the tiny dataset, and its resume file's bytes."""
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2, **settings))
    resume_file = resume_file_of(result["saved_model_file"])
    return result["saved_model_file"], resume_file, resume_file.read_bytes()


def test_a_resume_state_of_another_dataset_with_the_same_shapes_is_refused(tiny):
    checkpoint, resume_file, before = started_run(tiny)
    folder, modalities = twin_dataset(tiny, "other")
    swap_one_interaction(folder / "other.inter")
    with pytest.raises(ResumeError, match="another run .*dataset 'tiny', here 'other'"):
        run_recbole_micro(model="VBPR", dataset="other", resume=checkpoint,
                          config_dict=tiny.config_dict(epochs=3, modalities=modalities))
    assert resume_file.read_bytes() == before


def test_a_resume_state_whose_dataset_files_changed_since_is_refused(tiny):
    checkpoint, resume_file, before = started_run(tiny)
    swap_one_interaction(tiny.dir / "tiny.inter")
    with pytest.raises(ResumeError, match="files of dataset 'tiny' .* have changed since the run started"):
        run_recbole_micro(model="VBPR", dataset="tiny", resume=checkpoint, config_dict=tiny.config_dict(epochs=3))
    assert resume_file.read_bytes() == before


def test_a_resume_with_other_model_settings_names_them(tiny):
    checkpoint, resume_file, before = started_run(tiny)
    with pytest.raises(ResumeError, match="embedding_size: 64, here 32"):
        run_recbole_micro(model="VBPR", dataset="tiny", resume=checkpoint,
                          config_dict=tiny.config_dict(epochs=3, embedding_size=32))
    assert resume_file.read_bytes() == before


def test_a_state_without_an_identity_that_does_not_fit_names_the_weights(tiny):
    """A state of an older version has no identity: weights of other shapes are refused by name, not a traceback."""
    checkpoint, resume_file, _ = started_run(tiny)
    state = torch.load(resume_file, weights_only=True)
    del state["identity"]
    torch.save(state, resume_file)
    with pytest.raises(ResumeError, match=r"does not fit this model \(.*: saved \(\d+, 64\), here \(\d+, 32\)"):
        run_recbole_micro(model="VBPR", dataset="tiny", resume=checkpoint,
                          config_dict=tiny.config_dict(epochs=3, embedding_size=32))


def test_the_command_line_refuses_another_runs_state_in_one_line(tiny):
    from helpers import run_script

    checkpoint, resume_file, before = started_run(tiny)
    _, modalities = twin_dataset(tiny, "other")
    settings = tiny.write_config("other.yaml", epochs=3, modalities=modalities)
    out = run_script("-m", "VBPR", "-d", "other", f"--config_files={settings}", "--resume", checkpoint, cwd=tiny.root)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # RecBole's own warnings aside
    assert out.stderr.strip().endswith(line)
    assert line.startswith(f"error: {resume_file} is the resume state of another run") and "'other'" in line
    assert resume_file.read_bytes() == before


def test_a_resume_file_that_is_not_a_resume_state_is_one_line(tiny):
    checkpoint, resume_file, _ = started_run(tiny)
    torch.save([1, 2, 3], resume_file)
    with pytest.raises(ResumeError, match="is not a resume state \\(it holds list data\\)"):
        run_recbole_micro(model="VBPR", dataset="tiny", resume=checkpoint, config_dict=tiny.config_dict(epochs=3))
