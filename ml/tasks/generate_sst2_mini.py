"""Regenerate the embedded demo task `sst2-mini` (GLUE SST-2 TSV format), deterministically.

Short product and film reviews built from templates; negations and contrast clauses ("but")
keep it from being solvable by single words, so the metric visibly rises over a few rounds
instead of jumping to 100% at once. Run: python -m lola_deft.ml.tasks.generate_sst2_mini
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = [
    "the movie",
    "this film",
    "the plot",
    "the acting",
    "the soundtrack",
    "the ending",
    "the story",
    "the cast",
    "the director's work",
    "the dialogue",
    "the camera work",
    "this sequel",
    "the book",
    "the restaurant",
    "the service",
    "the meal",
    "the hotel",
    "this phone",
    "the battery",
    "the screen",
    "the concert",
    "the show",
    "the game",
]
POSITIVE = [
    "wonderful",
    "brilliant",
    "delightful",
    "excellent",
    "charming",
    "moving",
    "superb",
    "gripping",
    "fantastic",
    "lovely",
    "impressive",
    "clever",
    "heartfelt",
    "enjoyable",
    "stunning",
    "refreshing",
    "solid",
    "great",
    "memorable",
    "beautiful",
]
NEGATIVE = [
    "dull",
    "awful",
    "boring",
    "terrible",
    "clumsy",
    "tedious",
    "disappointing",
    "bland",
    "weak",
    "painful",
    "forgettable",
    "messy",
    "annoying",
    "lifeless",
    "poor",
    "shallow",
    "bad",
    "sloppy",
    "predictable",
    "ugly",
]
INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "very ", "rather ", "surprisingly "]
OPENERS = ["", "", "honestly, ", "overall, ", "i think ", "in the end, ", "to be fair, "]


def sentence(rng: random.Random) -> tuple[str, int]:
    label = rng.randint(0, 1)
    kind = rng.random()
    subject = rng.choice(SUBJECTS)
    intensifier = rng.choice(INTENSIFIERS)
    if kind < 0.55:  # plain statement
        adjective = rng.choice(POSITIVE if label else NEGATIVE)
        text = f"{rng.choice(OPENERS)}{subject} was {intensifier}{adjective}"
    elif kind < 0.8:  # negated opposite
        adjective = rng.choice(NEGATIVE if label else POSITIVE)
        text = f"{rng.choice(OPENERS)}{subject} was not {intensifier}{adjective} at all"
    else:  # contrast: the clause after "but" decides
        first = rng.choice(NEGATIVE if label else POSITIVE)
        second = rng.choice(POSITIVE if label else NEGATIVE)
        other = rng.choice([s for s in SUBJECTS if s != subject])
        text = f"{subject} was {first}, but {other} was {intensifier}{second}"
    return text + rng.choice([" .", " !", " .", ""]), label


def write(path: Path, rows: list[tuple[str, int]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("sentence\tlabel\n")
        for text, label in rows:
            handle.write(f"{text}\t{label}\n")


def main() -> None:
    rng = random.Random(20241123)
    folder = Path(__file__).with_name("sst2-mini")
    folder.mkdir(exist_ok=True)
    seen: set[str] = set()
    rows: list[tuple[str, int]] = []
    while len(rows) < 2000:
        text, label = sentence(rng)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    write(folder / "train.tsv", rows[:1600])
    write(folder / "dev.tsv", rows[1600:])


if __name__ == "__main__":
    main()
