"""GLUE tasks: TSV loaders for the 8 tasks of the paper's Table I, their metrics, and sharding.

Each loader reads the standard GLUE folder layout (train.tsv, dev.tsv; MNLI: dev_matched.tsv and
dev_mismatched.tsv) as the files ship: a UTF-8 byte-order mark is ignored, and rows with too few
columns (QQP's train.tsv has some) are skipped and counted. Metrics follow GLUE: Matthews
correlation for CoLA, Pearson/Spearman for STS-B, F1 and accuracy for MRPC and QQP, accuracy
otherwise. numpy only: agents install no scipy.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

csv.field_size_limit(1 << 24)
log = logging.getLogger(__name__)

# More short rows than this share of a file means it is not this task's file, not a few bad rows.
MAX_SKIPPED_SHARE = 0.05

# The embedded default task shipped with the package (GLUE SST-2 format).
EMBEDDED_TASK_DIR = Path(__file__).with_name("tasks") / "sst2-mini"


class DataError(ValueError):
    """A task folder or file that cannot be read as the expected GLUE TSV; says where."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    num_labels: int  # 1 means regression (STS-B)
    text_columns: tuple[str | int, ...]  # header names, or indices for header-less files
    label_column: str | int
    labels: tuple[str, ...] = ()  # label strings in class-index order (classification)
    # What each class means, for people (id2label of a shared adapter); GLUE files spell some
    # classes "0"/"1". Empty: the file's label strings are the names.
    label_names: tuple[str, ...] = ()
    has_header: bool = True
    dev_file: str = "dev.tsv"
    # Further evaluation sets, by name (MNLI's mismatched genres); reported beside the dev split.
    extra_dev_files: tuple[tuple[str, str], ...] = ()
    metric: str = "accuracy"  # the headline metric

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def dev_sets(self) -> dict[str, str]:
        """Evaluation set name -> file: "dev" (the headline metric's) first, then the others."""
        return {"dev": self.dev_file, **dict(self.extra_dev_files)}

    def id2label(self) -> dict[int, str]:
        """Class index -> readable name ("score" for a regression task's one output)."""
        names = self.label_names or self.labels or ("score",)
        return dict(enumerate(names))


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "cola",
        2,
        (3,),
        1,
        ("0", "1"),
        ("unacceptable", "acceptable"),
        has_header=False,
        metric="mcc",
    ),
    "sst2": TaskSpec("sst2", 2, ("sentence",), "label", ("0", "1"), ("negative", "positive")),
    "mrpc": TaskSpec(
        "mrpc",
        2,
        ("#1 String", "#2 String"),
        "Quality",
        ("0", "1"),
        ("not_equivalent", "equivalent"),
        metric="f1",
    ),
    "qqp": TaskSpec(
        "qqp",
        2,
        ("question1", "question2"),
        "is_duplicate",
        ("0", "1"),
        ("not_duplicate", "duplicate"),
        metric="f1",
    ),
    "stsb": TaskSpec("stsb", 1, ("sentence1", "sentence2"), "score", metric="pearson"),
    "mnli": TaskSpec(
        "mnli",
        3,
        ("sentence1", "sentence2"),
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        dev_file="dev_matched.tsv",
        extra_dev_files=(("mismatched", "dev_mismatched.tsv"),),
    ),
    "qnli": TaskSpec(
        "qnli", 2, ("question", "sentence"), "label", ("entailment", "not_entailment")
    ),
    "rte": TaskSpec(
        "rte", 2, ("sentence1", "sentence2"), "label", ("entailment", "not_entailment")
    ),
}
TASK_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


@dataclass
class Split:
    texts: list[tuple[str, ...]]
    labels: np.ndarray  # int64 class ids, or float32 scores for regression

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
        return Split([self.texts[i] for i in indices], self.labels[np.asarray(indices, dtype=int)])


def task_spec(name: str) -> TaskSpec:
    key = TASK_ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise DataError(f"unknown GLUE task {name!r}; known: {sorted(TASKS)}")
    return TASKS[key]


def split_path(folder: Path | str, spec: TaskSpec, split: str) -> Path:
    """The file of a split: "train", "dev" or one of the task's further evaluation sets."""
    files = {"train": "train.tsv", **spec.dev_sets()}
    if split not in files:
        raise DataError(f"{spec.name} has no split {split!r}; it has {sorted(files)}")
    return Path(folder) / files[split]


def read_split(folder: Path | str, spec: TaskSpec, split: str) -> Split:
    """Read one split of a task folder; every bad row is reported with its line number.

    Rows with too few columns are skipped and counted in the log (real GLUE files carry a few);
    a file where they are more than MAX_SKIPPED_SHARE of the rows is refused instead.
    """
    path = split_path(folder, spec, split)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a GLUE {spec.name} folder)")
    texts: list[tuple[str, ...]] = []
    labels: list[float] = []
    short_rows: list[int] = []
    # utf-8-sig: files saved by spreadsheet tools start with a byte-order mark, which would
    # otherwise become part of the first header name.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: list[str] | None = next(reader, None) if spec.has_header else None

        def column(key: str | int) -> int:
            if isinstance(key, int):
                return key
            if header is None or key not in header:
                raise DataError(f"{path}: header lacks column {key!r} (has {header})")
            return header.index(key)

        text_idx = [column(key) for key in spec.text_columns]
        label_idx = column(spec.label_column)
        needed = max(*text_idx, label_idx) + 1
        for line_number, row in enumerate(reader, start=2 if header else 1):
            if not row:
                continue
            if len(row) < needed:
                short_rows.append(line_number)
                continue
            text = tuple(row[i] for i in text_idx)
            raw = row[label_idx]
            if spec.is_regression:
                try:
                    labels.append(float(raw))
                except ValueError:
                    raise DataError(
                        f"{path}:{line_number}: score {raw!r} is not a number"
                    ) from None
            elif raw in spec.labels:
                labels.append(spec.labels.index(raw))
            else:
                raise DataError(f"{path}:{line_number}: label {raw!r} not in {list(spec.labels)}")
            texts.append(text)
    _check_short_rows(path, short_rows, len(texts), needed)
    if not texts:
        raise DataError(f"{path}: no examples")
    dtype = np.float32 if spec.is_regression else np.int64
    return Split(texts, np.asarray(labels, dtype=dtype))


def _check_short_rows(path: Path, lines: list[int], kept: int, needed: int) -> None:
    """Log the skipped rows, or refuse a file that is mostly rows of the wrong shape."""
    if not lines:
        return
    shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
    if len(lines) > MAX_SKIPPED_SHARE * (len(lines) + kept):
        raise DataError(
            f"{path}: {len(lines)} of {len(lines) + kept} rows have fewer than {needed} "
            f"columns (lines {shown}); is this the right task's file?"
        )
    log.warning(
        "%s: skipped %d row(s) with fewer than %d columns (lines %s)",
        path,
        len(lines),
        needed,
        shown,
    )


def read_dev_sets(folder: Path | str, spec: TaskSpec) -> dict[str, Split]:
    """Every evaluation set of a task: "dev" always, the others (MNLI mismatched) where the
    folder has them; a missing one is named in the log, not silently left out."""
    sets = {"dev": read_split(folder, spec, "dev")}
    for name, _ in spec.extra_dev_files:
        if split_path(folder, spec, name).is_file():
            sets[name] = read_split(folder, spec, name)
        else:
            log.warning(
                "%s: no %s; the %s set is not evaluated",
                folder,
                split_path(folder, spec, name).name,
                name,
            )
    return sets


def shard_indices(
    labels: np.ndarray,
    num_shards: int,
    shard: int,
    *,
    mode: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Indices of one agent's shard: i.i.d., or label-skewed with Dirichlet(alpha) proportions.

    Every shard gets a disjoint part of the data; all agents with the same seed agree on the split
    without talking to each other.
    """
    if not 0 <= shard < num_shards:
        raise DataError(f"shard {shard} out of range for {num_shards} shards")
    rng = np.random.default_rng(seed)
    if mode == "iid":
        return np.sort(np.array_split(rng.permutation(len(labels)), num_shards)[shard])
    if mode != "label-skew":
        raise DataError(f"unknown sharding mode {mode!r} (iid or label-skew)")
    keys = (
        labels
        if labels.dtype.kind in "iu"
        else np.digitize(labels, np.quantile(labels, [0.25, 0.5, 0.75]))
    )
    chosen: list[np.ndarray] = []
    for value in np.unique(keys):
        members = rng.permutation(np.nonzero(keys == value)[0])
        proportions = rng.dirichlet(np.full(num_shards, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        chosen.append(np.split(members, cuts)[shard])
    return np.sort(np.concatenate(chosen))


def _binary_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    true_positive = float(np.sum((predictions == 1) & (labels == 1)))
    predicted, actual = float(np.sum(predictions == 1)), float(np.sum(labels == 1))
    if predicted == 0 or actual == 0:
        return 0.0
    precision, recall = true_positive / predicted, true_positive / actual
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
    tp = float(np.sum((predictions == 1) & (labels == 1)))
    tn = float(np.sum((predictions == 0) & (labels == 0)))
    fp = float(np.sum((predictions == 1) & (labels == 0)))
    fn = float(np.sum((predictions == 0) & (labels == 1)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks with ties, as Spearman's correlation needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def compute_metrics(spec: TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """GLUE metrics from model outputs (logits, or scores for regression)."""
    if spec.is_regression:
        scores = outputs.reshape(-1)
        pearson = _pearson(scores, labels)
        spearman = _pearson(_ranks(scores), _ranks(labels))
        return {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}
    predictions = outputs.argmax(axis=-1)
    metrics = {"accuracy": float(np.mean(predictions == labels))}
    if spec.name == "cola":
        metrics["mcc"] = _mcc(labels, predictions)
    if spec.name in ("mrpc", "qqp"):
        metrics["f1"] = _binary_f1(labels, predictions)
    return metrics


MetricFn = Callable[[TaskSpec, np.ndarray, np.ndarray], dict[str, float]]
