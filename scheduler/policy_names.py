"""Policy names and one-line descriptions, importable without numpy/scipy (for the CLI)."""

DEFAULT_POLICY = "jbba"

POLICY_HELP = {
    "jbba": "exact joint bandwidth-and-block allocation (problem P2); the default",
    "ba": "exact block allocation with equal bandwidth (problem P1), O(KL) when depth-monotone",
    "crunch": "the paper's Algorithm 2 for P1, as written (needs depth-monotone costs)",
    "dual-ascent": "the paper's Algorithm 3 heuristic for P2",
    "linear-hungarian": "the paper's reference for P1: linear threshold search, Hungarian checks",
    "comm-aware": "paper baseline, memory-safe: best channels first that fit, equal bandwidth",
    "comp-aware": "paper baseline, memory-safe: fastest devices first that fit, equal bandwidth",
    "comm-aware-paper": "paper baseline as defined: the L best channels, blind to memory",
    "comp-aware-paper": "paper baseline as defined: the L fastest devices, blind to memory",
    "random": "random feasible devices, equal bandwidth (seeded)",
}


def known_policy(name: str) -> str:
    """The policy as a metric label: a name from POLICY_HELP, else "unknown", so a request
    cannot add label values (and series) of its choosing."""
    return name if name in POLICY_HELP else "unknown"
