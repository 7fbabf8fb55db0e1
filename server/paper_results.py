"""The paper's reported numbers (Wu, Chen, Huang, Section VI), for `deft reproduce` to set its
own results beside. Figures the paper gives only as curves are its stated claims in the text."""

from __future__ import annotations

# Table I: minutes to reach 90% of the centralized metric, RoBERTa-base, per scheme and task.
TABLE_I_TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
TABLE_I_MINUTES = {
    "comm-aware": (97.47, 15.74, 9.51, 119.18, 32.67, 90.46, 32.32, 54.30),
    "ba": (69.86, 11.44, 5.81, 87.42, 24.15, 58.57, 24.05, 38.69),
    "jbba": (58.45, 9.74, 5.12, 71.92, 20.11, 50.66, 19.91, 34.02),
}
SCHEME_NAMES = {"comm-aware": "Comm-aware DEFT", "ba": "BA for DEFT", "jbba": "JBBA for DEFT"}

# Section VI-B and VI-C claims, as ratios (ours are computed the same way).
DEEPEST_OVER_SHALLOWEST_COMPUTE = 2.0  # "nearly twice" (Fig. 4a)
DEFT_OVER_SINGLE_DEVICE_MEMORY = 1 / 3  # "only 1/3 of the single-device case" (Fig. 4b)
BA_OVER_BASELINE_AT_10DB = 0.6  # "nearly 40% reduction in the case of transmit SNR 10 dB"
JBBA_OVER_BASELINE_AT_50 = 0.4  # "the latency of JBBA is 40% of the benchmark scheme ..."
JBBA_OVER_BA_AT_50 = 0.6  # "... and 60% of the BA when 50 devices are participating"


def table_i_minutes(scheme: str, task: str) -> float | None:
    """The paper's Table I entry, or None for a task it does not list."""
    key = task.lower().replace("-", "")
    if key not in TABLE_I_TASKS:
        return None
    return TABLE_I_MINUTES[scheme][TABLE_I_TASKS.index(key)]
