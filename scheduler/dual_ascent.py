"""The paper's Algorithm 3: dual ascent on the Lagrangian (14)-(15) of problem P4, for comparison.

Each iteration, with duals lambda_k >= 0 (latency constraints C4.1), mu >= 0 (bandwidth budget
C4.2) and sigma_k (coupling C4.3) fixed:
  * T minimises the linear term (1 - sum lambda) T: T_max if the coefficient is negative, else 0,
    where T_max is the longest device latency of the previous iteration (as the paper suggests);
  * alpha minimises sum alpha_kl (lambda_k J_kl - sigma_k): CRUNCH on that weight matrix gives the
    bottleneck threshold, then the Hungarian method on the pairs under it (Section V-C);
  * beta, B_k follow Lemma 1: the L devices with the least 2 sqrt(lambda_k S mu / r_k) + sigma_k,
    B_k = sqrt(beta_k lambda_k S / (r_k mu));
  * duals take a projected subgradient step, eq. (16) (with r_k restored in the upload term).

Loose ends the paper leaves open, decided here:
  * Units: gradients are normalised (seconds by the equal-bandwidth latency tau, bandwidth by B,
    mu's step by its starting value) and clipped to [-CLIP, CLIP] so one formula serves any
    instance; step eps_i = EPS0 / sqrt(i+1).
  * Start: lambda_k = 1/L, sigma_k = 0, mu from stationarity (sum_k B_k = B for the L devices).
  * Primal recovery: the iterate (alpha, B) is not feasible in general (beta may disagree with
    alpha, sum B_k may differ from B). We take alpha's devices and give them Lemma 1's bandwidth
    shares, sqrt(lambda_k / r_k), rescaled to exactly B (lambda floored so none gets zero), and
    report that allocation's true latency max_k (J_k + S / (B_k r_k)).
  * Stop: after MAX_ITERATIONS, or PATIENCE iterations without a better recovered latency.
    The best recovered allocation is returned.
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.bottleneck import bottleneck_assignment
from lola_deft.scheduler.instance import Instance

MAX_ITERATIONS = 300
PATIENCE = 60
EPS0 = 0.5
CLIP = 10.0
LAMBDA_FLOOR = 1e-3


def _block_allocation(weights: np.ndarray) -> np.ndarray:
    """CRUNCH threshold, then min-weight perfect matching (Hungarian) on the crunched pairs."""
    threshold, _ = bottleneck_assignment(weights)
    crunched = np.where(weights <= threshold, weights, np.inf)
    from scipy.optimize import linear_sum_assignment  # imported on first use: CLI start-up

    blocks, devices = linear_sum_assignment(crunched.T)
    assigned = np.empty(weights.shape[1], dtype=np.int64)
    assigned[blocks] = devices
    return assigned


def _lemma1(
    lam: np.ndarray, mu: float, sigma: np.ndarray, r: np.ndarray, bits: float, blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Device involvement beta and bandwidth B_k minimising L_{B,beta} (eq. 17-18)."""
    score = 2.0 * np.sqrt(lam * bits * mu / r) + sigma
    chosen = np.argpartition(score, blocks - 1)[:blocks]
    beta = np.zeros(lam.size)
    beta[chosen] = 1.0
    with np.errstate(over="ignore"):
        bandwidth = np.sqrt(beta * lam * bits / (r * mu))
    return beta, bandwidth


def dual_ascent(
    instance: Instance, *, max_iterations: int = MAX_ITERATIONS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Best recovered (devices, bandwidth) found by Algorithm 3, and the iterations it ran."""
    num_devices, num_blocks = instance.num_devices, instance.num_blocks
    compute, fits = instance.compute_seconds, instance.fits
    r, bits, budget = instance.spectral_efficiency, instance.payload_bits, instance.bandwidth_hz
    tau, _ = bottleneck_assignment(instance.equal_bandwidth_latency)
    blocks = np.arange(num_blocks)

    lam = np.full(num_devices, 1.0 / num_blocks)
    sigma = np.zeros(num_devices)
    mu = float(np.sum(np.sort(np.sqrt(lam * bits / r))[:num_blocks]) / budget) ** 2
    mu_scale = mu
    t_max = tau
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    since_best = 0
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        latency_var = t_max if 1.0 - lam.sum() < 0 else 0.0
        weights = np.where(fits, lam[:, None] * compute - sigma[:, None], np.inf)
        devices = _block_allocation(weights)
        beta, bandwidth = _lemma1(lam, max(mu, 1e-300), sigma, r, bits, num_blocks)

        # Primal recovery: alpha's devices with Lemma 1's shares, rescaled to the budget.
        share = np.sqrt(np.maximum(lam[devices], LAMBDA_FLOOR * lam.max(initial=1.0)) / r[devices])
        recovered = budget * share / share.sum()
        device_latency = compute[devices, blocks] + bits / (recovered * r[devices])
        true_latency = float(device_latency.max())
        if best is None or true_latency < best[0]:
            best, since_best = (true_latency, devices, recovered), 0
        else:
            since_best += 1
        if since_best >= PATIENCE:
            break
        t_max = true_latency

        # Dual update, eq. (16), on normalised and clipped subgradients.
        step = EPS0 / np.sqrt(iteration)
        alpha_compute = np.zeros(num_devices)
        alpha_compute[devices] = compute[devices, blocks]
        alpha_count = np.zeros(num_devices)
        alpha_count[devices] = 1.0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            upload = np.where(beta > 0, bits / (np.maximum(bandwidth, 1e-300) * r), 0.0)
            lam_grad = np.clip((alpha_compute + upload - latency_var) / tau, -CLIP, CLIP)
        lam = np.maximum(0.0, lam + step * lam_grad)
        mu_grad = np.clip((bandwidth.sum() - budget) / budget, -CLIP, CLIP)
        mu = max(0.0, mu + step * mu_grad * mu_scale)
        sigma = sigma + step * tau * (beta - alpha_count)
    assert best is not None
    return best[1], best[2], iteration
