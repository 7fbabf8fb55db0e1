"""Memory feasibility of an instance, with a message that says which blocks cannot be placed."""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.errors import InfeasibleError
from lola_deft.scheduler.instance import Instance


def format_bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def format_blocks(indices: np.ndarray) -> str:
    """'block 3' or 'blocks 3, 5..12' for 0-based block indices."""
    numbers = [int(i) + 1 for i in indices]
    runs: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        runs.append(str(start) if start == previous else f"{start}..{previous}")
        if number is not None:
            start = previous = number
    return ("block " if len(numbers) == 1 else "blocks ") + ", ".join(runs)


def match_blocks(allowed: np.ndarray) -> np.ndarray:
    """Maximum matching of blocks to distinct devices over allowed (K, L) pairs.

    Returns, per block, the matched device index or -1 (Hopcroft-Karp via scipy).
    """
    from scipy.sparse import csr_matrix  # here: depth-monotone instances never need scipy
    from scipy.sparse.csgraph import maximum_bipartite_matching

    graph = csr_matrix(np.ascontiguousarray(allowed.T), dtype=np.int8)
    return np.asarray(maximum_bipartite_matching(graph, perm_type="column"))


def check_feasible(instance: Instance) -> None:
    """Raise InfeasibleError, saying why, unless every block can go to a distinct fitting device."""
    num_devices, num_blocks = instance.num_devices, instance.num_blocks
    if num_devices < num_blocks:
        raise InfeasibleError(
            f"{num_blocks} blocks need {num_blocks} distinct devices, "
            f"but only {num_devices} reported"
        )
    fit_counts = instance.fits.sum(axis=0)
    largest = format_bytes(float(instance.device_memory.max()))
    homeless = np.nonzero(fit_counts == 0)[0]
    if homeless.size:
        first = int(homeless[0])
        raise InfeasibleError(
            f"{format_blocks(homeless)} {'fits' if homeless.size == 1 else 'fit'} on no device: "
            f"block {first + 1} alone needs "
            f"{format_bytes(instance.block_memory[first])} "
            f"(largest available memory: {largest})"
        )
    if np.all(np.diff(instance.block_memory) >= 0):
        # Nested fit sets: blocks l..L need L-l+1 devices that hold block l (Hall's condition).
        for block in range(num_blocks):
            needed = num_blocks - block
            if fit_counts[block] < needed:
                raise InfeasibleError(
                    f"blocks {block + 1}..{num_blocks} need {needed} distinct devices with at "
                    f"least {format_bytes(instance.block_memory[block])} each, "
                    f"but only {fit_counts[block]} have that much memory"
                )
        return
    matched = match_blocks(instance.fits)
    if np.any(matched < 0):
        raise InfeasibleError(
            f"memory admits at most {int(np.sum(matched >= 0))} of {num_blocks} blocks at once; "
            f"left without a device: {format_blocks(np.nonzero(matched < 0)[0])}"
        )
