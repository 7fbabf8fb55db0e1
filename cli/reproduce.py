"""`deft reproduce`: the paper's Section VI (Figs. 4-8, Table I) on this machine, beside the
paper's numbers (lola_deft.server.reproduce does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lola_deft.cli.common import model_and_data_errors, positive_int, user_errors

DESCRIPTION = """Reproduces the paper's experiments at a size this machine can run: Fig. 4
(per-block compute and memory of the model), Figs. 5, 6 and 8 (modelled round latency against
SNR, bandwidth and number of devices in the paper's stated setting, every policy including the
paper's memory-blind baselines and its linear-search + Hungarian reference), and Fig. 7 with
Table I (training runs per scheme and the time each needs to reach 90% of centralized LoRA).
Default: all-MiniLM-L6-v2 on the embedded, synthetic sst2-mini task, about 15 minutes on two
cores; the paper's sizes: --model a local roberta-base folder and --glue TASK=DIR per task.
Writes PNG and PDF figures, results.json and REPRODUCTION.md (paper against ours)."""


def glue_folder(text: str) -> tuple[str, Path]:
    """TASK=DIR, e.g. cola=/data/glue/CoLA."""
    from lola_deft.ml.glue import TASK_ALIASES, TASKS

    task, separator, folder = text.partition("=")
    key = TASK_ALIASES.get(task.lower(), task.lower())
    if not separator or not folder:
        raise argparse.ArgumentTypeError(f"expected TASK=DIR, got {text!r}")
    if key not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown GLUE task {task!r}; known: {sorted(TASKS)}")
    return key, Path(folder)


def add_reproduce_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="the paper's Figs. 4-8 and Table I on this machine, beside the paper's numbers",
        description=DESCRIPTION,
    )
    parser.add_argument("--out", type=Path, default=Path("deft-reproduce"), help="output folder")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="local model folder (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--glue",
        type=glue_folder,
        action="append",
        default=None,
        metavar="TASK=DIR",
        help="a GLUE task and its folder, repeatable (default: the embedded synthetic sst2-mini)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=20, help="training rounds per scheme and task"
    )
    parser.add_argument(
        "--sweep-rounds",
        type=positive_int,
        default=50,
        help="random rounds per point of the latency sweeps (the bench uses 200)",
    )
    parser.add_argument(
        "--agents",
        type=positive_int,
        default=None,
        help="agents per training run (default: the paper's ratio, 20 devices for 12 blocks)",
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the latency sweeps")
    parser.set_defaults(handler=run_reproduce)


def _reproduce_errors() -> tuple[type[Exception], ...]:
    from lola_deft.server.demo_runner import DemoFailed

    return (*model_and_data_errors(), DemoFailed)


@user_errors("reproduce", _reproduce_errors)
def run_reproduce(args: argparse.Namespace) -> int:
    from lola_deft.ml.glue import read_split, task_spec
    from lola_deft.ml.model import require_model_dir
    from lola_deft.server.reproduce import ReproduceConfig, TaskData, reproduce

    if args.model is not None:
        require_model_dir(args.model)
    tasks = [TaskData("sst2")]
    if args.glue:
        tasks = [TaskData(task, folder.resolve()) for task, folder in args.glue]
        for data in tasks:  # fail before minutes of work, not after
            assert data.data_dir is not None
            read_split(data.data_dir, task_spec(data.task), "dev")
    config = ReproduceConfig(
        out=args.out,
        model_dir=args.model.resolve() if args.model else None,
        tasks=tasks,
        rounds=args.rounds,
        sweep_rounds=args.sweep_rounds,
        seed=args.seed,
        agents=args.agents,
    )
    reproduce(config)
    print(f"paper against ours: {args.out / 'REPRODUCTION.md'}")
    print(f"figures and results.json: {args.out}/")
    return 0
