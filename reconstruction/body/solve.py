"""A 1-D root finder for monotonic body measurements (standing height as a function of one shape value)."""

from __future__ import annotations

from collections.abc import Callable


def solve_monotonic(
    measure: Callable[[float], float], target: float, low: float, high: float, tolerance: float = 2e-5
) -> tuple[float, float, float]:
    """The x in [low, high] where ``measure(x) == target`` for a continuous monotonic ``measure``, by regula
    falsi with the Illinois fix (a handful of evaluations for a near-linear measure, unlike bisection).

    Returns ``(x, measure(low), measure(high))``; raises ValueError naming the reachable range when
    ``target`` lies outside it."""
    f_low, f_high = measure(low) - target, measure(high) - target
    reach = (f_low + target, f_high + target)
    if f_low * f_high > 0 and min(abs(f_low), abs(f_high)) > tolerance:
        raise ValueError(f"{target:.4f} is outside the reachable range {min(reach):.4f}-{max(reach):.4f}")
    if abs(f_low) <= tolerance:
        return low, *reach
    if abs(f_high) <= tolerance:
        return high, *reach
    side = 0
    x = low
    for _ in range(60):
        x = (low * f_high - high * f_low) / (f_high - f_low)
        f_x = measure(x) - target
        if abs(f_x) <= tolerance:
            break
        if f_x * f_high > 0:  # root between low and x
            high, f_high = x, f_x
            if side == -1:
                f_low /= 2
            side = -1
        else:
            low, f_low = x, f_x
            if side == 1:
                f_high /= 2
            side = 1
    return x, *reach
