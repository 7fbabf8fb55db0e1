"""One line per round on stdout: allocation, modelled and measured latency, loss, metric."""

from __future__ import annotations

from lola_deft.server.messages import Evaluation, RoundRecord


def format_round(record: RoundRecord, total_rounds: int) -> str:
    allocation = " ".join(
        f"{a.block}:{a.device}" for a in sorted(record.assignment, key=lambda a: a.block)
    )
    loss = record.train_loss
    metric = record.eval.metric if record.eval else None
    parts = [
        f"round {record.round:3d}/{total_rounds}",
        f"modelled {record.modelled_latency_s:8.2f} s",
        f"measured {record.measured_wall_s:6.2f} s",
        f"loss {loss:.4f}" if loss is not None else "loss    -  ",
        f"metric {metric:.4f}" if metric is not None else "metric   -   ",
        f"blocks {allocation}",
    ]
    return " | ".join(parts)


def print_baseline(evaluation: Evaluation) -> None:
    print(
        f"baseline  | dev {evaluation.metric_name} {evaluation.metric:.4f} "
        f"| dev loss {evaluation.loss:.4f}",
        flush=True,
    )


def print_round(record: RoundRecord, total_rounds: int) -> None:
    print(format_round(record, total_rounds), flush=True)
