"""What one core's configuration costs in SRAM: the single formula the partitioner, the design-rule
checks and ``nmc info`` all use (docs/timing_energy.md, "memory")."""
from __future__ import annotations

from dataclasses import dataclass

from nmc.chip import ChipSpec

__all__ = ["CoreUsage", "neuron_bytes", "core_usage", "bytes_of_bits", "unit_weight_bits"]


def bytes_of_bits(bits: int) -> int:
    return (bits + 7) // 8


def unit_weight_bits(chip: ChipSpec) -> int:
    """Narrowest weight precision of ``chip`` that holds the weight 1 (merge cores add with unit weights)."""
    bits = chip.core.weight_bits
    return 1 if 1 in bits else (2 if 2 in bits else 8)


def neuron_bytes(chip: ChipSpec, soma: str, has_bias: bool = True) -> int:
    """SRAM bytes per neuron for its parameters and state."""
    c = chip.core
    acc = bytes_of_bits(c.accumulator_bits)
    bias = acc if has_bias else 0
    if soma == "ann":
        return bias + bytes_of_bits(c.requant_mult_bits) + 1  # bias, multiplier, shift
    if soma == "lif":
        return bias + bytes_of_bits(c.membrane_bits)
    if soma == "count":
        return bias + acc
    if soma == "partial":
        return bias
    raise AssertionError(f"unknown soma {soma!r}")  # internal invariant


@dataclass(frozen=True)
class CoreUsage:
    weight_bytes: int
    neuron_bytes: int
    axon_bytes: int
    router_bytes: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.neuron_bytes + self.axon_bytes + self.router_bytes


def core_usage(chip: ChipSpec, n_axons: int, n_neurons: int, w_bits: int, soma: str, in_bytes: int,
               has_bias: bool = True, router_entries: int = 0) -> CoreUsage:
    """SRAM a core needs: dense weight block (axon rows, each ``ceil(n_neurons * w_bits / 8)`` bytes),
    per-neuron parameters and state, the axon buffer, and its routing table."""
    row = bytes_of_bits(n_neurons * w_bits)
    return CoreUsage(
        weight_bytes=n_axons * row,
        neuron_bytes=n_neurons * neuron_bytes(chip, soma, has_bias),
        axon_bytes=n_axons * in_bytes,
        router_bytes=router_entries * chip.core.router_entry_bytes,
    )
