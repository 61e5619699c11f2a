"""docs/timing_energy.md lists every timing and energy number of every preset with its source."""
from pathlib import Path

import pytest

from nmc.chip import list_presets, load_chip

DOC = Path(__file__).resolve().parents[2] / "docs" / "timing_energy.md"
FIELDS = ["clock_hz", "core.mac_rows", "core.mac_cols", "core.soma_lanes", "core.axon_bandwidth_bytes_per_cycle",
          "core.weight_bandwidth_bytes_per_cycle", "timing.core_overhead_cycles", "timing.soma_ann_cycles",
          "timing.soma_lif_cycles", "timing.soma_count_cycles", "timing.soma_partial_cycles", "timing.barrier_cycles",
          "timing.round_overhead_cycles",
          "timing.spike_input_timing", "noc.hop_latency_cycles", "noc.chip_link_latency_cycles",
          "noc.port_latency_cycles", "noc.io_latency_cycles", "noc.packet_payload_bytes", "noc.spike_encoding",
          "energy.mac_pj", "energy.sop_pj", "energy.neuron_update_pj", "energy.spike_pj", "energy.sram_read_byte_pj",
          "energy.sram_write_byte_pj", "energy.packet_pj", "energy.hop_pj", "energy.chip_crossing_pj",
          "energy.static_power_per_core_w"]


def _value(d, field):
    for p in field.split("."):
        d = d[p]
    return f"{d:g}" if isinstance(d, float) else str(d)


@pytest.mark.parametrize("name", list_presets())
def test_every_timing_and_energy_number_is_in_the_doc_with_its_source(name):
    chip = load_chip(name)
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(f"### `{name}`"):]
    section = section[:section.find("\n### ", 1) if "\n### " in section[1:] else len(section)]
    d = chip.to_dict()
    for f in FIELDS:
        src = chip.sources.get(f) or chip.sources.get(f.split(".")[0])
        assert src, f"{name}: {f} has no source"
        mark = " (E)" if f in chip.estimates or f.split(".")[0] in chip.estimates else ""
        assert f"| `{f}`{mark} | {_value(d, f)} | {src.replace('|', '/')} |" in section, f"{name}: {f}"
