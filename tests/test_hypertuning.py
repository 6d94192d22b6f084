"""objective_function is RecBole HyperTuning's entry point."""
from recbole.trainer import HyperTuning

from recbole_micro.quick_start import objective_function


def test_exhaustive_search_runs_every_point_through_our_pipeline(tiny):
    fixed = tiny.write_config("fixed.yaml", model="VBPR", dataset="tiny")
    params = tiny.root / "vbpr.hyper"
    params.write_text("embedding_size choice [4,16]\n")
    tuner = HyperTuning(objective_function, algo="exhaustive", params_file=str(params), fixed_config_file_list=[str(fixed)])
    tuner.run()
    assert set(tuner.params2result) == {"embedding_size:4", "embedding_size:16"}
    scores = {p: r["best_valid_score"] for p, r in tuner.params2result.items()}
    assert tuner.best_score == max(scores.values())
    assert tuner.best_params["embedding_size"] in (4, 16)
    assert all(r["model"] == "VBPR" and "recall@20" in r["test_result"] for r in tuner.params2result.values())
