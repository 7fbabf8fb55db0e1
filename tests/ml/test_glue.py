"""GLUE TSV loaders, metrics and sharding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lola_deft.ml.batching import encode
from lola_deft.ml.evaluation import evaluate_sets
from lola_deft.ml.glue import (
    TASKS,
    DataError,
    compute_metrics,
    read_dev_sets,
    read_split,
    shard_indices,
    task_spec,
)
from lola_deft.ml.model import load_model

TASK_DIR = Path(__file__).parents[2] / "ml" / "tasks" / "sst2-mini"

# One row per task in the official GLUE layout (headers as in the GLUE distribution).
SAMPLES = {
    "cola": (
        None,
        [
            "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
            "gj04\t0\t*\tThe more books I ask to whom he will give.",
        ],
    ),
    "sst2": ("sentence\tlabel", ["a gripping film\t1", "dull\t0"]),
    "mrpc": (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        ["1\t1\t2\tHe said so .\tHe said that .", "0\t3\t4\tA cat .\tA car ."],
    ),
    "qqp": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        ["1\t1\t2\tHow old?\tWhat age?\t1", "2\t3\t4\tWhy?\tWhere?\t0"],
    ),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        [
            "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn airplane.\t5.000",
            "1\tmain\tf\t2012\t4\tnone\tnone\tA man.\tA dog.\t0.400",
        ],
    ),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
        [
            "0\t1\t1n\tgov\t(\t(\t(\t(\tIt rains.\tIt is wet.\tentailment\tentailment",
            "1\t2\t2c\tgov\t(\t(\t(\t(\tIt rains.\tIt is dry.\tcontradiction\tcontradiction",
        ],
    ),
    "qnli": (
        "index\tquestion\tsentence\tlabel",
        ["0\tWho?\tHe did.\tentailment", "1\tWhen?\tBlue.\tnot_entailment"],
    ),
    "rte": (
        "index\tsentence1\tsentence2\tlabel",
        ["0\tA b.\tB.\tentailment", "1\tC d.\tE.\tnot_entailment"],
    ),
}


def write_task(folder: Path, name: str) -> None:
    header, rows = SAMPLES[name]
    text = "\n".join(([header] if header else []) + rows) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(text)
    for file in TASKS[name].dev_sets().values():
        (folder / file).write_text(text)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_paper_task_loads(tmp_path: Path, name: str) -> None:
    write_task(tmp_path, name)
    spec = task_spec(name)
    for split in ("train", "dev"):
        data = read_split(tmp_path, spec, split)
        assert len(data) == 2
        assert len(data.texts[0]) == len(spec.text_columns)
    if spec.is_regression:
        assert data.labels.tolist() == pytest.approx([5.0, 0.4])
    else:
        assert sorted(data.labels.tolist()) == [0, 1] or name == "mnli"


def test_bad_rows_are_reported_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    with pytest.raises(DataError, match=r"train.tsv:3: label 'maybe' not in \['0', '1'\]"):
        read_split(tmp_path, task_spec("sst2"), "train")
    (tmp_path / "train.tsv").write_text("text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match="header lacks column 'sentence'"):
        read_split(tmp_path, task_spec("sst2"), "train")
    with pytest.raises(DataError, match="no such file"):
        read_split(tmp_path / "missing", task_spec("sst2"), "dev")
    with pytest.raises(DataError, match="unknown GLUE task 'wnli'"):
        task_spec("wnli")


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    header, rows = SAMPLES["mrpc"]  # MRPC's header starts with the label column
    (tmp_path / "train.tsv").write_bytes(("\n".join([header, *rows]) + "\n").encode("utf-8-sig"))
    data = read_split(tmp_path, task_spec("mrpc"), "train")
    assert data.labels.tolist() == [1, 0]
    assert data.texts[0] == ("He said so .", "He said that .")


def test_short_rows_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, _ = SAMPLES["qqp"]
    good = [f"{i}\t{i}\t{i + 1}\tQ{i}?\tR{i}?\t{i % 2}" for i in range(40)]
    short = ["363362\t713\t714\tHow do I", "363363\t715"]  # as QQP's train.tsv has them
    (tmp_path / "train.tsv").write_text("\n".join([header, *good[:20], *short, *good[20:]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="lola_deft.ml.glue"):
        data = read_split(tmp_path, task_spec("qqp"), "train")
    assert len(data) == 40
    assert data.texts[20] == ("Q20?", "R20?")
    assert "skipped 2 row(s) with fewer than 6 columns (lines 22, 23)" in caplog.text


def test_a_file_of_mostly_short_rows_is_refused(tmp_path: Path) -> None:
    header, rows = SAMPLES["qqp"]
    (tmp_path / "train.tsv").write_text("\n".join([header, *rows, "1\t2", "3\t4"]) + "\n")
    with pytest.raises(DataError, match=r"train.tsv: 2 of 4 rows have fewer than 6 columns"):
        read_split(tmp_path, task_spec("qqp"), "train")


def test_mnli_is_evaluated_matched_and_mismatched(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_task(tmp_path, "mnli")
    header, rows = SAMPLES["mnli"]
    # The mismatched set differs from the matched one, so its numbers can differ too.
    (tmp_path / "dev_mismatched.tsv").write_text("\n".join([header, rows[0]]) + "\n")
    spec = task_spec("mnli")
    sets = read_dev_sets(tmp_path, spec)
    assert {name: len(split) for name, split in sets.items()} == {"dev": 2, "mismatched": 1}
    loaded = load_model(tiny_model_dir, spec.num_labels, dropout=0.0, seed=0)
    encoded = {name: encode(loaded.tokenizer, split, 16) for name, split in sets.items()}
    result = evaluate_sets(loaded, encoded, spec)
    assert result["metric_name"] == "accuracy"
    assert result["metric"] == result["accuracy"]
    assert result["mismatched_accuracy"] in (0.0, 1.0)  # one example
    assert result["mismatched_loss"] != result["loss"]
    (tmp_path / "dev_mismatched.tsv").unlink()
    with caplog.at_level(logging.WARNING, logger="lola_deft.ml.glue"):
        assert list(read_dev_sets(tmp_path, spec)) == ["dev"]
    assert "no dev_mismatched.tsv; the mismatched set is not evaluated" in caplog.text


def test_the_embedded_task_is_balanced_sst2() -> None:
    spec = task_spec("SST-2")
    train, dev = read_split(TASK_DIR, spec, "train"), read_split(TASK_DIR, spec, "dev")
    assert (len(train), len(dev)) == (1600, 400)
    assert 0.4 < train.labels.mean() < 0.6
    assert not {t for (t,) in train.texts} & {t for (t,) in dev.texts}


def test_metrics_follow_glue() -> None:
    labels = np.array([1, 1, 0, 0])
    logits = np.array([[0, 1], [1, 0], [1, 0], [1, 0]], dtype=float)  # predicts 0,1,0,0 -> 1,0,0,0
    cola = compute_metrics(task_spec("cola"), labels, logits)
    assert cola["accuracy"] == 0.75
    assert cola["mcc"] == pytest.approx(1 / np.sqrt(3))
    assert compute_metrics(task_spec("mrpc"), labels, logits)["f1"] == pytest.approx(2 / 3)
    scores = np.array([1.0, 2.0, 2.0, 4.0])
    stsb = compute_metrics(task_spec("stsb"), np.array([1.0, 3.0, 2.0, 5.0]), scores)
    assert stsb["pearson"] == pytest.approx(np.corrcoef(scores, [1, 3, 2, 5])[0, 1])
    assert stsb["spearman"] == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr


@pytest.mark.parametrize("mode", ["iid", "label-skew"])
def test_shards_are_disjoint_and_cover_the_data(mode: str) -> None:
    labels = np.random.default_rng(0).integers(0, 3, 600)
    shards = [shard_indices(labels, 6, i, mode=mode, seed=4) for i in range(6)]
    together = np.concatenate(shards)
    assert len(together) == len(set(together.tolist())) == 600
    fractions = np.array([[np.mean(labels[s] == c) for c in range(3)] for s in shards if len(s)])
    spread = fractions.max(axis=0) - fractions.min(axis=0)
    assert (spread.max() > 0.3) if mode == "label-skew" else (spread.max() < 0.2)
    with pytest.raises(DataError, match="out of range"):
        shard_indices(labels, 6, 6)
