"""A round's record as Prometheus gauges: MNLI's mismatched loss is a loss of its set, never a
metric, and the headline numbers stay where dashboards read them."""

from __future__ import annotations

from lola_deft.server.export import export_metrics
from lola_deft.server.messages import AllocationRequest, Evaluation, RoundRecord
from lola_deft.server.metrics import CoordinatorMetrics


def test_a_further_sets_loss_is_exported_as_that_sets_loss() -> None:
    metrics = CoordinatorMetrics()
    evaluation = Evaluation(
        "accuracy",
        0.8,
        0.45,
        {"accuracy": 0.8, "mismatched_accuracy": 0.7, "mismatched_loss": 0.6},
    )
    record = RoundRecord(3, "jbba", 1.0, 1.0, 0.01, 2, [], [1], 0.5, eval=evaluation)
    request = AllocationRequest("jbba", 1, (1.0,), 1, 1.0, 1.0, (), 0)
    export_metrics(metrics, record, request)
    value = metrics.registry.get_sample_value
    assert value("deft_eval_loss") == 0.45
    assert value("deft_eval_set_loss", {"set": "mismatched"}) == 0.6
    assert value("deft_eval_metric", {"metric": "mismatched_accuracy"}) == 0.7
    assert value("deft_eval_metric", {"metric": "mismatched_loss"}) is None
