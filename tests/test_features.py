"""The feature hook: alignment by token, validation of every bad input, missing/cold items."""
import json
import logging

import numpy as np
import pytest
from helpers import N_COLD, N_WARM, build

from recbole_micro.data.dataset import MultimodalDataset
from recbole_micro.errors import FeatureFileError, SettingsError


def test_rows_are_aligned_by_token_not_file_order(tiny):
    _, dataset, _ = build("VBPR", tiny)
    assert isinstance(dataset, MultimodalDataset)
    file_tokens = (tiny.dir / "tiny.visual.tokens").read_text().split()
    assert file_tokens != tiny.item_tokens  # the file really is shuffled
    id2token = dataset.field2id_token["item_id"]
    assert len(id2token) == N_WARM + N_COLD + 1
    for name, table in (("visual", tiny.visual), ("textual", tiny.textual)):
        features = dataset.item_modalities[name]
        assert features.dtype == np.float32 and features.shape == (len(id2token), len(table["it00"]))
        for item_id in range(1, len(id2token)):
            np.testing.assert_array_equal(features[item_id], table[id2token[item_id]])
        np.testing.assert_array_equal(features[0], 0)  # PAD
        assert not dataset.imputed_items[name].any()


def test_cold_start_items_without_interactions_keep_their_features(tiny):
    _, dataset, (train, _, _) = build("VBPR", tiny)
    for token in tiny.cold_tokens:
        item_id = dataset.token2id("item_id", token)
        assert (dataset.inter_feat["item_id"] == item_id).sum() == 0
        np.testing.assert_array_equal(dataset.item_modalities["visual"][item_id], tiny.visual[token])


def test_features_stay_out_of_batches_and_are_shared_by_splits(tiny):
    _, dataset, (train, valid, test) = build(
        "VBPR", tiny,
        load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "genre_vec"]},
        modalities={"visual": tiny.modalities("visual")["visual"], "genre": {"field": "genre_vec"}},
    )
    batch = next(iter(train))
    assert set(batch.columns) <= {"user_id", "item_id", "neg_item_id", "rating", "timestamp"}
    assert "genre_vec" not in dataset.item_feat
    assert train._dataset.item_modalities["visual"] is dataset.item_modalities["visual"]
    assert test._dataset.item_modalities["genre"] is dataset.item_modalities["genre"]


def test_float_seq_column_route(tiny):
    _, dataset, _ = build(
        "VBPR", tiny,
        load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "genre_vec"]},
        modalities={"genre": {"field": "genre_vec", "dim": 3}},
        normalize_all=True,  # must not rescale the modality
    )
    genre = dataset.item_modalities["genre"]
    for item_id in range(1, genre.shape[0]):
        token = dataset.field2id_token["item_id"][item_id]
        np.testing.assert_allclose(genre[item_id], tiny.textual[token][:3], atol=1e-6)


def test_json_token_mapping(tiny):
    rows = {t: i for i, t in enumerate((tiny.dir / "tiny.visual.tokens").read_text().split())}
    (tiny.dir / "visual_ids.json").write_text(json.dumps(rows))
    _, dataset, _ = build("VBPR", tiny, modalities={"visual": {"file": "tiny.visual.npy", "tokens": "visual_ids.json"}})
    item_id = dataset.token2id("item_id", "it05")
    np.testing.assert_array_equal(dataset.item_modalities["visual"][item_id], tiny.visual["it05"])


def expect_error(tiny, *fragments, **overrides):
    with pytest.raises(FeatureFileError) as err:
        build("VBPR", tiny, **overrides)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_missing_feature_file(tiny):
    (tiny.dir / "tiny.visual.npy").unlink()
    expect_error(tiny, "tiny.visual.npy", "not found", "modalities.visual.file")


def test_missing_token_file(tiny):
    (tiny.dir / "tiny.visual.tokens").unlink()
    expect_error(tiny, "tiny.visual.tokens", "one item token per line")


def test_row_and_token_count_mismatch(tiny):
    tokens = (tiny.dir / "tiny.visual.tokens").read_text().split()
    (tiny.dir / "tiny.visual.tokens").write_text("\n".join(tokens[:-1]) + "\n")
    expect_error(tiny, "tiny.visual.tokens", f"lists {len(tokens) - 1} tokens", f"has {len(tokens)} rows")


def test_duplicate_tokens(tiny):
    tokens = (tiny.dir / "tiny.visual.tokens").read_text().split()
    tokens[3] = tokens[0]
    (tiny.dir / "tiny.visual.tokens").write_text("\n".join(tokens) + "\n")
    expect_error(tiny, "twice", repr(tokens[0]))


def test_tokens_not_in_dataset(tiny):
    table = dict(tiny.visual, stranger=np.ones(8, np.float32))
    tiny.write_modality("visual", table)
    expect_error(tiny, "stranger", "not items of this dataset", "unknown_feature_policy")


def test_tokens_not_in_dataset_can_be_ignored(tiny, caplog):
    table = dict(tiny.visual, stranger=np.ones(8, np.float32))
    tiny.write_modality("visual", table)
    with caplog.at_level(logging.INFO):
        _, dataset, _ = build("VBPR", tiny, unknown_feature_policy="ignore")
    assert "1 of 33 tokens" in caplog.text
    assert dataset.item_modalities["visual"].shape[0] == N_WARM + N_COLD + 1


def test_file_of_another_dataset_is_always_an_error(tiny):
    tiny.write_modality("visual", {f"x{i}": np.ones(8, np.float32) for i in range(5)})
    expect_error(tiny, "5 of 5 tokens", unknown_feature_policy="ignore")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_features(tiny, bad):
    table = dict(tiny.visual)
    table["it04"] = table["it04"].copy()
    table["it04"][2] = bad
    tiny.write_modality("visual", table)
    expect_error(tiny, "NaN or infinite", "'it04'", "tiny.visual.npy")


def test_non_numeric_matrix(tiny):
    np.save(tiny.dir / "tiny.visual.npy", np.array([["a", "b"]] * (N_WARM + N_COLD)))
    expect_error(tiny, "non-numeric dtype", "tiny.visual.npy")


def test_ragged_rows(tiny):
    ragged = np.empty(N_WARM + N_COLD, dtype=object)
    ragged[:] = [np.ones(1 + i % 2) for i in range(N_WARM + N_COLD)]
    np.save(tiny.dir / "tiny.visual.npy", ragged, allow_pickle=True)
    expect_error(tiny, "Ragged or non-numeric rows", "tiny.visual.npy")


def test_not_a_matrix(tiny):
    np.save(tiny.dir / "tiny.visual.npy", np.ones(N_WARM + N_COLD, dtype=np.float32))
    expect_error(tiny, "expected a 2-D")


def test_not_an_npy_file(tiny):
    (tiny.dir / "tiny.visual.npy").write_text("1,2,3\n")
    expect_error(tiny, "could not be read as .npy", "tiny.visual.npy")


def test_dimension_changed(tiny):
    expect_error(
        tiny, "dimension 8", "expects dim 16",
        modalities={"visual": {"file": "tiny.visual.npy", "tokens": "tiny.visual.tokens", "dim": 16}},
    )


def test_ragged_float_seq(tiny):
    lines = (tiny.dir / "tiny.item").read_text().splitlines()
    lines[5] += " 0.5"
    (tiny.dir / "tiny.item").write_text("\n".join(lines) + "\n")
    expect_error(
        tiny, "ragged rows",
        load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "genre_vec"]},
        modalities={"genre": {"field": "genre_vec"}},
    )


def test_non_numeric_float_seq_names_the_file(tiny):
    lines = (tiny.dir / "tiny.item").read_text().splitlines()
    lines[5] = lines[5].split("\t")[0] + "\t0.1 abc 0.3"
    (tiny.dir / "tiny.item").write_text("\n".join(lines) + "\n")
    expect_error(
        tiny, "tiny.item", "space-separated numbers",
        load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "genre_vec"]},
        modalities={"genre": {"field": "genre_vec"}},
    )


def test_float_seq_column_not_loaded(tiny):
    expect_error(tiny, "load_col", "genre_vec", modalities={"genre": {"field": "genre_vec"}})


def test_bad_spec_and_policy(tiny):
    expect_error(tiny, "unknown keys", modalities={"visual": {"file": "tiny.visual.npy", "path": "x"}})
    expect_error(tiny, "exactly one of", modalities={"visual": {"tokens": "tiny.visual.tokens"}})
    with pytest.raises(SettingsError, match="missing_feature_policy is 'drop'; allowed: one of 'error', 'mean', 'zero'"):
        build("VBPR", tiny, missing_feature_policy="drop")  # refused with the settings, before the features load
    expect_error(tiny, "names none", modalities=None)


def drop_items(tiny, *tokens):
    table = {t: v for t, v in tiny.visual.items() if t not in tokens}
    tiny.write_modality("visual", table)


def test_missing_rows_error_by_default(tiny):
    drop_items(tiny, "it03", "it07")
    expect_error(tiny, "2 of 32 items have no row", "'it03'", "missing_feature_policy: mean")


@pytest.mark.parametrize("policy", ["mean", "zero"])
def test_missing_rows_imputed(tiny, caplog, policy):
    drop_items(tiny, "it03", "it07")
    with caplog.at_level(logging.INFO):
        _, dataset, _ = build("VBPR", tiny, missing_feature_policy=policy)
    assert f"2 of 32 items have no feature row; imputed with the {policy}" in caplog.text
    features = dataset.item_modalities["visual"]
    imputed = dataset.imputed_items["visual"]
    ids = [dataset.token2id("item_id", t) for t in ("it03", "it07")]
    assert imputed.sum() == 2 and imputed[ids].all()
    kept = [i for i in range(1, features.shape[0]) if i not in ids]
    expected = features[kept].mean(axis=0) if policy == "mean" else np.zeros(8)
    for i in ids:
        np.testing.assert_allclose(features[i], expected, rtol=1e-6)
    np.testing.assert_array_equal(features[0], 0)  # PAD is never imputed
    assert not imputed[0]


def test_per_modality_policy_overrides_the_global_one(tiny):
    drop_items(tiny, "it03")
    spec = dict(tiny.modalities("visual")["visual"], missing="zero")
    _, dataset, _ = build("VBPR", tiny, modalities={"visual": spec})
    assert dataset.imputed_items["visual"].sum() == 1


def test_float16_features_are_read_as_float32(tiny):
    tiny.write_modality("visual", tiny.visual, dtype=np.float16)
    _, dataset, _ = build("VBPR", tiny)
    item_id = dataset.token2id("item_id", "it09")
    assert dataset.item_modalities["visual"].dtype == np.float32
    np.testing.assert_allclose(dataset.item_modalities["visual"][item_id], tiny.visual["it09"], atol=2e-3)


def test_saved_dataset_is_reused_until_a_feature_file_changes(tiny):
    _, first, _ = build("VBPR", tiny, save_dataset=True)
    _, second, _ = build("VBPR", tiny, save_dataset=True)
    assert first is not second
    np.testing.assert_array_equal(second.item_modalities["visual"], first.item_modalities["visual"])
    assert second.is_reusable_for(second.config)
    table = {t: v + 1 for t, v in tiny.visual.items()}
    tiny.write_modality("visual", table)
    assert not second.is_reusable_for(second.config)
    _, third, _ = build("VBPR", tiny, save_dataset=True)
    item_id = third.token2id("item_id", "it01")
    np.testing.assert_array_equal(third.item_modalities["visual"][item_id], tiny.visual["it01"] + 1)
