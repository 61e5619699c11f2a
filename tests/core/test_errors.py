"""Every design-rule error and every bad-input error a user can meet: the exception type, and a message
that names the layer / node / input, the offending value, the limit and a fix."""
from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc.frontend.builder import ModelBuilder
from nmc import rules as drc
from nets import hybrid, lossless_snn, spike_inputs
from nmc import cli
from nmc.api import parse_chips
from nmc.chip import PRESET_DIR, load_chip
from nmc.coremap import SOMA, CoreMap
from nmc.corefile import load as load_coremap
from nmc.corefile import validate
from nmc.corefile import save as save_coremap
from nmc.errors import (ChipSpecError, CoreMapError, DesignRuleError, DoesNotFitError, InputError, MappingError,
                        ModelError, NmcError, QuantizationError, RegistryError, UnsupportedOpError)

TINY = {"core.neurons": 8, "core.axons": 16, "core.memory_bytes": 1024}
STEPS = 6


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def spikes():
    return spike_inputs(0, STEPS, 2, 40)


@pytest.fixture(scope="module")
def snn(spikes):
    """lossless SNN: sum1 (dense+dense recurrent add + LIF, 30 neurons, 70 axons) -> fc2 (LIF, 12) -> count."""
    return nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": spikes})


@pytest.fixture(scope="module")
def ann():
    """hybrid: conv+relu -> avgpool -> fc1 (static ANN) -> LIFs -> count -> head (readout ANN)."""
    img = np.random.default_rng(0).integers(0, 17, (4, 1, 8, 8)).astype(float)
    return nmc.compile(hybrid(seed=0, steps=STEPS), calib={"image": img})


@pytest.fixture(scope="module")
def mixed():
    """A model with a static and a step input (for batch-size checks)."""
    b = ModelBuilder("mixed", num_steps=STEPS)
    a = b.input("a", (4,))
    s = b.input("s", (3,), kind="step")
    h = b.add(b.gemm(a, np.ones((5, 4)), name="fa"), b.gemm(s, np.ones((5, 3)), name="fs"), name="sum")
    out, _ = b.lif(h, "l1", threshold=2.0)
    b.output(out)
    m = b.build()
    calib = {"a": np.ones((2, 4)), "s": np.ones((STEPS, 2, 3))}
    return nmc.compile(m, calib=calib)


def with_chip(cm: CoreMap, **overrides) -> CoreMap:
    """The same arrays under a chip with other limits (what a core map compiled for another chip looks like)."""
    chip = cm.chip.with_overrides({k.replace("__", "."): v for k, v in overrides.items()})
    return cm.replace(chip=chip)


def tampered(cm: CoreMap, **changes) -> CoreMap:
    """A copy of ``cm`` whose entries are replaced: ``cores__x=(index, value)`` sets ``cores.x[index] = value``."""
    arrays = {k: v.copy() for k, v in cm.arrays().items()}
    for k, (i, v) in changes.items():
        arrays[k.replace("__", ".")][i] = v
    return CoreMap.from_arrays(cm.chip, json.loads(json.dumps(cm.meta)), arrays)


def layer_core(cm: CoreMap, name: str, soma: str | None = None) -> int:
    names = [l["name"] for l in cm.meta["layers"]]
    for c in range(cm.num_cores):
        if names[int(cm.cores.layer[c])] == name and (soma is None or cm.cores.model[c] == SOMA[soma]):
            return c
    raise AssertionError(name)


def only_rule(violations: list[str], rule: str) -> list[str]:
    assert violations, "no violation"
    assert all(v.startswith(rule + ":") for v in violations), violations
    return violations


# ============================================================================ design rules
def untested_rules(rules, source: str) -> list[str]:
    """Rules of ``rules`` that no test in ``source`` provokes: a test names the rule it expects with
    ``only_rule(..., "<rule>")`` or spells out a message that starts with ``"<rule>: ``."""
    tested = set(re.findall(r'only_rule\([^\n]*?,\s*"([\w-]+)"\)', source))
    tested |= set(re.findall(r'"([\w-]+): (?:layer|the )', source))
    return sorted(set(rules) - tested)


def test_every_rule_is_tested():
    # docs/architecture.md: a design rule is a function in nmc/rules.py "and a test of its message" here
    source = Path(__file__).read_text()
    assert untested_rules(drc.RULES, source) == []
    # the check can fail: a rule registered without a test is named
    assert untested_rules([*drc.RULES, "synapses-per-axon"], source) == ["synapses-per-axon"]


def test_neurons_per_core(snn):
    v = only_rule(drc.check_coremap(with_chip(snn, core__neurons=10)), "neurons-per-core")
    assert len(v) == 3  # sum1 (30 neurons), fc2 (12) and count (12)
    msg = next(x for x in v if "'sum1'" in x)
    assert "layer 'sum1' core" in msg and "30 neurons > 10" in msg and "core.neurons" in msg and "fix:" in msg


def test_core_limits_are_inclusive(snn):
    # exactly at the limit is fine, one below is a violation
    v = drc.check_coremap(with_chip(snn, core__neurons=12))
    assert len(v) == 1 and v[0].startswith("neurons-per-core: layer 'sum1'")
    assert drc.check_coremap(with_chip(snn, core__axons=70)) == []
    assert only_rule(drc.check_coremap(with_chip(snn, core__axons=69)), "axons-per-core")
    need = 2422  # sum1's memory, see test_memory_per_core
    v = drc.check_coremap(with_chip(snn, core__memory_bytes=need))
    assert v == []
    v = only_rule(drc.check_coremap(with_chip(snn, core__memory_bytes=need - 1)), "memory-per-core")
    assert len(v) == 1 and "layer 'sum1'" in v[0]


def test_axons_per_core(snn):
    v = only_rule(drc.check_coremap(with_chip(snn, core__axons=50)), "axons-per-core")
    assert len(v) == 1
    assert "layer 'sum1' core" in v[0] and "reads 70 axons > 50" in v[0] and "core.axons" in v[0] and "fix:" in v[0]


def test_memory_per_core(snn):
    v = only_rule(drc.check_coremap(with_chip(snn, core__memory_bytes=1000)), "memory-per-core")
    msg = next(x for x in v if "'sum1'" in x)
    # 70 axons x 30 int8 weights + 30 x (4 B bias + 4 B membrane) + 70 x 1 B axon buffer + 3 x 4 B routes
    assert "needs 2422 B (weights 2100, neurons 240, axon buffer 70, routing 12) > 1000 B" in msg
    assert "core.memory_bytes" in msg and "fix:" in msg


def test_weight_precision_unsupported_width(snn):
    v = only_rule(drc.check_coremap(with_chip(snn, core__weight_bits=[8])), "weight-precision")
    c = layer_core(snn, "count")
    assert v == [f"weight-precision: layer 'count' core {c} uses 1-bit weights; 'tianjic' supports [8] "
                 "(core.weight_bits); fix: recompile for this chip"]


def test_weight_precision_values_beyond_declared_width(snn):
    c = layer_core(snn, "sum1")
    w = snn.core_weights(c)
    v = only_rule(drc.check_coremap(tampered(snn, cores__w_bits=(c, 2))), "weight-precision")
    assert v == [f"weight-precision: layer 'sum1' core {c} has weights in [{w.min()}, {w.max()}] but declares "
                 "2-bit weights ([-1, 1]); fix: recompile"]


def test_phases_per_step_when_compiling(spikes):
    with pytest.raises(DesignRuleError) as ei:
        nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": spikes}, overrides={"core.phases_per_step": 2},
                    depth="refuse")
    v = only_rule(ei.value.violations, "phases-per-step")
    assert len(v) == 1
    assert "the step stage needs 3 phases > 1 round(s) of 2 (core.phases_per_step" in v[0]
    assert "layer 'count'" in v[0] and "fix:" in v[0]


def test_phases_per_step_exceeded_by_a_merge_phase():
    # two dense layers fit 2 phases; splitting the first by fan-in adds its merge phase
    rng = np.random.default_rng(0)
    b = ModelBuilder("chain")
    x = b.input("x", (40,))
    h = b.gemm(x, rng.integers(-2, 3, (6, 40)).astype(float), name="fc1")
    b.output(b.gemm(h, rng.integers(-2, 3, (4, 6)).astype(float), name="fc2"))
    model, calib = b.build(), {"x": rng.integers(-3, 4, (6, 40)).astype(float)}
    nmc.compile(model, calib=calib, overrides={"core.phases_per_step": 2}, depth="refuse")
    with pytest.raises(DesignRuleError) as ei:
        nmc.compile(model, calib=calib, overrides={"core.phases_per_step": 2, "core.axons": 20}, depth="refuse")
    v = only_rule(ei.value.violations, "phases-per-step")
    assert v == ["phases-per-step: the static stage needs 3 phases > 1 round(s) of 2 (core.phases_per_step of "
                 "'tianjic'); layers beyond the limit: layer 'fc2'; fix: recompile with depth='rounds' (--depth rounds; "
                 "the stage then runs in 2 rounds, each boundary costing timing.barrier_cycles + "
                 "timing.round_overhead_cycles), make the network shallower per timestep, or avoid fan-in splits (they "
                 "add a merge phase) with a larger-core chip"]
    # by default the stage runs in 2 rounds instead
    assert nmc.compile(model, calib=calib, overrides={"core.phases_per_step": 2, "core.axons": 20}).meta["rounds"] == \
        {"static": 2, "step": 1, "readout": 1}


def test_router_table_when_compiling(spikes):
    with pytest.raises(DesignRuleError) as ei:
        nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": spikes},
                    overrides={"core.router_table_entries": 1})
    v = only_rule(ei.value.violations, "router-table")
    # sum1 sends to itself (recurrence), to fc2 and to the host (output lif1.s); fc2 to count and the host
    assert [re.sub(r"core \d+", "core N", x) for x in v] == [
        "router-table: layer 'sum1' core N sends to 3 destinations > 1 (core.router_table_entries of 'tianjic'); "
        "fix: place consumers of this layer on fewer cores",
        "router-table: layer 'fc2' core N sends to 2 destinations > 1 (core.router_table_entries of 'tianjic'); "
        "fix: place consumers of this layer on fewer cores"]


def test_placement_outside_the_grid(snn):
    c = layer_core(snn, "fc2")
    v = only_rule(drc.check_coremap(tampered(snn, cores__x=(c, 12))), "placement")
    assert v == [f"placement: layer 'fc2' core {c} is at (12, {int(snn.cores.y[c])}), outside the 12 x 13 "
                 "grid of 1 x 1 chip(s); fix: recompile with more chips"]
    v = only_rule(drc.check_coremap(tampered(snn, cores__y=(c, -1))), "placement")
    assert len(v) == 1 and "is at" in v[0] and ", -1), outside" in v[0]


def test_placement_shared_position(snn):
    c0, c1 = layer_core(snn, "sum1"), layer_core(snn, "fc2")
    x, y = int(snn.cores.x[c0]), int(snn.cores.y[c0])
    # in distinct phases the two would be folded cores (mapper/fold.py), which may share a router: same phase here
    folded = drc.check_coremap(tampered(snn, cores__x=(c1, x), cores__y=(c1, y)))
    assert not [m for m in folded if m.startswith("placement")]
    v = only_rule(drc.check_coremap(tampered(snn, cores__x=(c1, x), cores__y=(c1, y),
                                             cores__phase=(c1, int(snn.cores.phase[c0])))), "placement")
    assert len(v) == 1
    assert f"layer 'sum1' core {c0}" in v[0] and f"layer 'fc2' core {c1}" in v[0]
    assert f"share position ({x}, {y})" in v[0] and "fix: recompile" in v[0]


def test_placement_out_of_grid_is_not_reported_as_shared(snn):
    # (0, 14) is outside the 12 x 13 grid; it must not be confused with the core at (1, 0)
    a = snn.cores
    c1 = layer_core(snn, "fc2")
    assert (int(a.x[c1]), int(a.y[c1])) == (1, 0)
    c = layer_core(snn, "count")
    v = only_rule(drc.check_coremap(tampered(snn, cores__x=(c, 0), cores__y=(c, 14))), "placement")
    assert v == [f"placement: layer 'count' core {c} is at (0, 14), outside the 12 x 13 grid of 1 x 1 chip(s); "
                 "fix: recompile with more chips"]


def test_accumulator_range_when_compiling():
    # every neuron reads 40 uint8 inputs (up to 255) with weight 100: worst case 40 * 255 * 100 = 1020000,
    # beyond a 16-bit accumulator; 20 axons per core split the layer, so split and unsplit could differ
    b = ModelBuilder("acc")
    x = b.input("x", (40,))
    b.output(b.gemm(x, np.full((4, 40), 100.0), name="wide"))
    calib = {"x": np.random.default_rng(0).integers(0, 256, (4, 40)).astype(float)}
    with pytest.raises(DesignRuleError) as ei:
        nmc.compile(b.build(), calib=calib, overrides={"core.axons": 20, "core.accumulator_bits": 16})
    v = only_rule(ei.value.violations, "accumulator-range")
    assert v == ["accumulator-range: layer 'wide' is split across cores and its worst-case sum 1020000 reaches 2^15 "
                 "(core.accumulator_bits); split and unsplit results could differ; fix: reduce the layer's fan-in "
                 "or weight range"]
    # the same layer unsplit is fine (the accumulator saturates as the numerics specify)
    nmc.compile(b.build(), calib=calib, overrides={"core.accumulator_bits": 16})


def test_accumulator_range_in_a_tampered_header(snn):
    cm = tampered(snn)
    cm.meta["layers"][0].update(split=True, acc_bound=2.0 ** 31)
    v = only_rule(drc.check_coremap(cm), "accumulator-range")
    assert len(v) == 1 and "layer 'sum1'" in v[0] and "2147483648 reaches 2^31" in v[0]


def test_soma_threshold_and_leak(snn):
    c = layer_core(snn, "fc2")
    v = only_rule(drc.check_coremap(tampered(snn, cores__param=((c, 0), 0))), "soma-parameters")
    assert v == [f"soma-parameters: layer 'fc2' core {c} (lif) has threshold 0 outside 1 .. {2 ** 27 - 1} "
                 "(firing threshold (membrane units); core.membrane_bits = 28, core.beta_shift = 8); fix: rescale "
                 "the layer or recompile for this chip"]
    v = only_rule(drc.check_coremap(tampered(snn, cores__param=((c, 3), 257))), "soma-parameters")
    assert len(v) == 1 and f"core {c} (lif) has beta_mult 257 outside 0 .. 256" in v[0]  # beta > 1


def test_state_words(snn):
    c = layer_core(snn, "fc2")
    n = int(snn.cores.neuron_off[c])
    v = only_rule(drc.check_coremap(tampered(snn, neurons__state_init=((n, 0), -2 ** 63))), "state-words")
    assert v == [f"state-words: layer 'fc2' core {c} (lif) neuron {n} starts with v {-2 ** 63} outside its 28-bit "
                 f"state word {-2 ** 27} .. {2 ** 27 - 1}; fix: recompile (a smaller initial state)"]


def test_soma_per_neuron_threshold():
    """A LIFT neuron's own threshold (a per-neuron parameter) below its range names the neuron and the chip fields."""
    b = ModelBuilder("lift", num_steps=4)
    x = b.input("x", (3,), kind="step")
    s, _ = b.lift(b.gemm(x, np.eye(3), name="fc"), "n", threshold=[1.0, 2.0, 3.0])
    b.output(s)
    cm = nmc.compile(b.build(), calib={"x": np.ones((4, 1, 3))})
    v = only_rule(drc.check_coremap(tampered(cm, neurons__param=((1, 0), 0))), "soma-parameters")
    assert len(v) == 1
    assert "layer 'fc' core 0 (lift) neuron 1 has threshold 0 outside 1 .. 134217727 (firing threshold" in v[0]
    assert "core.membrane_bits = 28" in v[0] and "fix:" in v[0]


def test_soma_requantiser(ann):
    c = layer_core(ann, "head")
    n = int(ann.cores.neuron_off[c]) + 1
    v = only_rule(drc.check_coremap(tampered(ann, neurons__param=((n, 0), 2 ** 16))), "soma-parameters")
    assert len(v) == 1
    assert f"layer 'head' core {c} (ann) neuron {n} has mult 65536 outside 0 .. {2 ** 16 - 1}" in v[0]
    assert "core.requant_mult_bits = 16" in v[0] and "fix:" in v[0]
    v = only_rule(drc.check_coremap(tampered(ann, neurons__param=((n, 1), 63))), "soma-parameters")
    assert "has shift 63 outside 0 .. 62" in v[0]


def test_compile_reports_all_violations_at_once(spikes):
    with pytest.raises(DesignRuleError) as ei:
        nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": spikes},
                    overrides={"core.phases_per_step": 2, "core.router_table_entries": 1}, depth="refuse")
    e = ei.value
    rules = [x.split(":")[0] for x in e.violations]
    assert rules == ["phases-per-step", "router-table", "router-table"]
    assert str(e).startswith("3 design-rule violation(s):")
    for x in e.violations:
        assert "  - " + x in str(e)
    assert isinstance(e, MappingError) and isinstance(e, ValueError) and isinstance(e, NmcError)


def test_validate_lists_every_violation(snn):
    cm = with_chip(snn, core__neurons=10, core__axons=50)
    with pytest.raises(CoreMapError) as ei:
        validate(cm)
    msg = str(ei.value)
    assert msg.startswith("core map breaks the chip's limits:")
    assert msg.count("neurons-per-core:") == 3 and msg.count("axons-per-core:") == 1


# ============================================================================ does not fit
def test_model_needing_more_cores_than_one_chip(spikes):
    model = lossless_snn(seed=0, steps=STEPS)
    small = dict(TINY, cores_x=2, cores_y=2)
    with pytest.raises(DoesNotFitError) as ei:
        nmc.compile(model, calib={"spikes": spikes}, overrides=small, chips="1x1")
    msg = str(ei.value)
    m = re.search(r"the model needs (\d+) cores; 1 x 1 chip\(s\) of 'tianjic' have 4 \(2 x 2 per chip\)", msg)
    assert m, msg
    n = int(m.group(1))
    per_layer = dict((k, int(v)) for k, v in re.findall(r"(\w+): (\d+)", msg.split("largest first):")[1]))
    assert set(per_layer) == {"sum1", "fc2", "count"} and sum(per_layer.values()) == n
    assert list(per_layer.values()) == sorted(per_layer.values(), reverse=True)
    need = -(-n // 4)
    cx = math.ceil(math.sqrt(need))
    assert f"--chips {cx}x{-(-need // cx)}" in msg and "--chips auto" in msg  # a near-square grid of chips
    cm = nmc.compile(model, calib={"spikes": spikes}, overrides=small, chips="auto")
    gx, gy = cm.meta["chips"]
    assert cm.num_cores == n and need <= gx * gy <= need + math.ceil(math.sqrt(need)) and min(gx, gy) > 1


def test_neuron_whose_fan_in_cannot_be_merged():
    # 400 inputs per neuron, 16 axons per core: 25 partial sums, more than a merge core's 16 axons
    b = ModelBuilder("wide")
    x = b.input("x", (400,))
    b.output(b.gemm(x, np.ones((2, 400)), name="fc_wide"))
    with pytest.raises(DoesNotFitError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((1, 400))}, overrides={"core.axons": 16})
    msg = str(ei.value)
    assert "layer 'fc_wide'" in msg and "reads 400 inputs" in msg and "core.axons = 16" in msg
    assert "reduce the layer's fan-in" in msg


def test_bad_chips_argument():
    for bad in ("0x1", "2", "axb", "2x-1"):
        with pytest.raises(InputError, match=re.escape(f"--chips '{bad}': expected 'XxY'")):
            parse_chips(bad)
    with pytest.raises(InputError, match="--chips '3by1'"):
        nmc.compile(lossless_snn(seed=0, steps=2), calib={"spikes": spike_inputs(0, 2, 1, 40)}, chips="3by1")


def test_unknown_placement_strategy_through_compile(spikes):
    with pytest.raises(RegistryError) as ei:
        nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": spikes}, placement="spiral")
    assert "'spiral'" in str(ei.value) and "greedy, linear" in str(ei.value)


def test_missing_calibration_range():
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(hybrid(seed=0, steps=STEPS))
    msg = str(ei.value)
    assert "graph input 'image'" in msg and "no calibration range" in msg and "--calib" in msg


def test_calibration_inputs_lacking_an_input():
    with pytest.raises(InputError) as ei:
        nmc.compile(hybrid(seed=0, steps=STEPS), calib={"img": np.ones((1, 1, 8, 8))})
    assert "lack graph input 'image'" in str(ei.value) and "['img']" in str(ei.value)


def test_threshold_too_small_for_the_membrane():
    b = ModelBuilder("thr", num_steps=3)
    x = b.input("x", (2,), kind="step")
    s, _ = b.lif(b.gemm(x, [[0.5, 100.0]], name="fc"), "l1", threshold=0.001)
    b.output(s)
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((3, 2, 2))})
    msg = str(ei.value)
    # membrane unit 1/k with k = 127 / 100: the threshold becomes round(0.00127) = 0
    assert "layer 'fc' (dense+lif, ONNX node 'fc+l1')" in msg and "threshold 0.001" in msg and "scales to 0" in msg
    assert f"outside 1 .. {2 ** 27 - 1}" in msg and "core.membrane_bits" in msg and "rescale" in msg


def test_bias_beyond_the_accumulator():
    b = ModelBuilder("bias")
    x = b.input("x", (2,))
    b.output(b.gemm(x, [[1.0, 2.0]], [1e12], name="fc"))
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((2, 2))})
    msg = str(ei.value)
    assert "layer 'fc'" in msg and "bias of neuron 0 quantises to 999999995904" in msg
    assert "beyond the 32-bit accumulator (core.accumulator_bits)" in msg and "rescale" in msg


def _with_ranges(model, ranges: str):
    meta = {p.key: p.value for p in model.metadata_props}
    meta["nmc.ranges"] = ranges
    helper.set_model_props(model, meta)
    return model


def test_requantisation_factor_beyond_the_multiplier():
    # weight scale 100.5 / 127, output scale 1e-4 / 127: factor 1.005e6 > 2^16
    b = ModelBuilder("rq")
    x = b.input("x", (2,))
    b.output(b.gemm(x, [[100.5, 1.0]], name="fc"))
    m = _with_ranges(b.build(), json.dumps({"x": [0, 255, True], "fc": [-1e-4, 1e-4, False]}))
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(m)
    msg = str(ei.value)
    assert "layer 'fc'" in msg and "requantisation factor 1.005e+06" in msg
    assert "multiplier range 2^16 (core.requant_mult_bits)" in msg and "recalibrate" in msg
    # with the metadata's ranges the same model compiles when they are sensible
    nmc.compile(_with_ranges(m, json.dumps({"x": [0, 255, True], "fc": [-300, 300, False]})))


def test_malformed_ranges_metadata():
    b = ModelBuilder("rq")
    x = b.input("x", (2,))
    b.output(b.gemm(x, [[1.0, 1.0]], name="fc"))
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(_with_ranges(b.build(), "{not json"))
    msg = str(ei.value)
    assert "'nmc.ranges' is malformed" in msg and "{tensor: [min, max, is_integer]}" in msg and "calibration" in msg


def test_graph_output_that_no_layer_computes():
    b = ModelBuilder("oi")
    x = b.input("x", (2,))
    b.output(b.gemm(x, [[1.0, 2.0]], name="fc"))
    b.output(b.identity(x, name="ident"))
    with pytest.raises(MappingError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((2, 2))})
    assert str(ei.value) == ("graph output 'ident' is not computed by any layer (it is a graph input or a state passed "
                             "through); drop it from the outputs")


def test_membrane_feeding_another_layer():
    b = ModelBuilder("mem", num_steps=2)
    x = b.input("x", (2,), kind="step")
    _, v = b.lif(b.gemm(x, [[1.0, 2.0]], name="fc"), "l1")
    b.output(b.gemm(v, [[1.0]], name="fv"))
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((2, 2, 2))})
    msg = str(ei.value)
    assert "layer 'fv'" in msg and "input tensor 'l1.v.next' has no representation on the chip" in msg
    assert "fix: feed the layer from a layer output or a LIF's spikes" in msg


def test_value_recurrence_is_refused():
    b = ModelBuilder("vrec", num_steps=2)
    x = b.input("x", (2,), kind="step")
    r = b.state("rec", (2,))
    h = b.relu(b.add(b.gemm(x, np.eye(2), name="fa"), b.gemm(r, np.eye(2), name="fb"), name="sum"), name="act")
    b.bind_state("rec", h)
    b.output(h)
    with pytest.raises(QuantizationError) as ei:
        nmc.compile(b.build(), calib={"x": np.ones((2, 2, 2))})
    msg = str(ei.value)
    assert "layer 'sum' (add(2 synapses)+relu, ONNX node 'sum+act')" in msg
    assert "input tensor 'rec'" in msg and "only spikes can be carried to the next step" in msg


# ============================================================================ core-map files
def _rewrite(src, dst, header_fn=None, member_fn=None):
    """Copy a core-map zip, changing the parsed header and/or member bytes."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    if header_fn is not None:
        h = json.loads(members["header.json"])
        header_fn(h)
        members["header.json"] = json.dumps(h).encode()
    if member_fn is not None:
        member_fn(members)
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return dst


@pytest.fixture
def saved(snn, tmp_path):
    return nmc.save(snn, tmp_path / "model.nmc")


def test_load_missing_file(tmp_path):
    p = tmp_path / "nope.nmc"
    with pytest.raises(CoreMapError, match=re.escape(f"core map '{p}' does not exist")):
        load_coremap(p)


def test_load_not_a_zip(tmp_path):
    p = tmp_path / "text.nmc"
    p.write_text("this is not a core map\n")
    with pytest.raises(CoreMapError) as ei:
        load_coremap(p)
    assert str(p) in str(ei.value) and "not a readable archive" in str(ei.value) and "recompile" in str(ei.value)


def test_load_zip_without_header(tmp_path):
    p = tmp_path / "other.nmc"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("weights.npy", b"")
    with pytest.raises(CoreMapError) as ei:
        load_coremap(p)
    assert str(p) in str(ei.value) and "no header.json" in str(ei.value) and "nmc compile" in str(ei.value)


def test_load_npz_is_not_a_core_map(tmp_path):
    p = tmp_path / "inputs.npz"
    np.savez(p, x=np.ones(3))
    with pytest.raises(CoreMapError, match="not an nmc core map"):
        load_coremap(p)


def test_load_flipped_byte_in_an_array(saved, tmp_path):
    def flip(members):
        b = bytearray(members["weights.data.npy"])
        b[-1] ^= 0x01  # the last weight, inside the array data
        members["weights.data.npy"] = bytes(b)

    p = _rewrite(saved, tmp_path / "flipped.nmc", member_fn=flip)
    with pytest.raises(CoreMapError) as ei:
        load_coremap(p)
    msg = str(ei.value)
    assert str(p) in msg and "integrity check (SHA-256 mismatch)" in msg and "recompile" in msg


def test_load_edited_header(saved, tmp_path):
    def edit(h):
        h["meta"]["layers"][0]["acc_bound"] = 1.0  # a plausible, silent edit

    p = _rewrite(saved, tmp_path / "edited.nmc", header_fn=edit)
    with pytest.raises(CoreMapError, match="integrity check"):
        load_coremap(p)

    def edit_chip(h):
        h["chip"]["core"]["neurons"] = 4096  # pretend the chip is bigger

    p = _rewrite(saved, tmp_path / "edited_chip.nmc", header_fn=edit_chip)
    with pytest.raises(CoreMapError, match="integrity check"):
        load_coremap(p)


def test_load_other_format_version(saved, tmp_path):
    for other in (1, 2, 3, 4, 6, None):  # flat arrays (1), no shared kernels (2), int64 routes (3), int64 neuron tables
        # (4), a future one, none
        p = _rewrite(saved, tmp_path / "other.nmc", header_fn=lambda h: h.update(format_version=other))
        with pytest.raises(CoreMapError) as ei:
            load_coremap(p)
        msg = str(ei.value)
        assert f"format version {other}" in msg and "reads version 5" in msg and "recompile" in msg


def test_load_missing_array(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "short.nmc", member_fn=lambda m: m.pop("neurons.bias.npy"))
    with pytest.raises(CoreMapError, match="array 'neurons.bias' is missing; recompile"):
        load_coremap(p)


def test_load_coremap_that_breaks_its_chip(snn, tmp_path):
    bad = with_chip(snn, core__neurons=10)
    p = save_coremap(bad, tmp_path / "bad.nmc")  # saving does not check; loading does
    with pytest.raises(CoreMapError) as ei:
        load_coremap(p)
    msg = str(ei.value)
    assert "breaks the chip's limits" in msg and "neurons-per-core: layer 'sum1'" in msg and "30 neurons > 10" in msg
    assert load_coremap(p, check=False).num_cores == snn.num_cores
    with pytest.raises(CoreMapError):
        nmc.emulate(str(p), {"spikes": spike_inputs(0, STEPS, 1, 40)})


def test_load_any_damaged_byte_is_refused_or_harmless(snn, saved, tmp_path):
    data = saved.read_bytes()
    p = tmp_path / "damaged.nmc"
    harmless = 0
    for i in range(0, len(data), 5):
        d = bytearray(data)
        d[i] ^= 0xFF
        p.write_bytes(bytes(d))
        try:
            cm = load_coremap(p)
        except CoreMapError:
            continue
        # the byte was zip bookkeeping that does not change the content: the map is intact
        harmless += 1
        assert cm.meta == json.loads(json.dumps(snn.meta)) and cm.chip == snn.chip, i
        for k, v in snn.arrays().items():
            np.testing.assert_array_equal(cm.arrays()[k], v, err_msg=f"byte {i}: {k}")
    assert harmless < len(range(0, len(data), 5)) // 2  # most bytes matter


def test_structural_damage_is_named(snn):
    arrays = snn.arrays()
    arrays["neurons.bias"] = arrays["neurons.bias"][:-1]
    with pytest.raises(CoreMapError, match=r"column neurons.bias has \d+ entries along N = \d+"):
        validate(CoreMap.from_arrays(snn.chip, snn.meta, arrays))
    with pytest.raises(CoreMapError, match=r"core 0: cores.model = 99 is not one of \["):  # the codes known
        validate(tampered(snn, cores__model=(0, 99)))
    arrays = snn.arrays()
    arrays["cores.param"] = arrays["cores.param"][:, :2]  # too narrow for a LIF's 7 parameters
    with pytest.raises(CoreMapError, match=r"neuron model 'lif' needs table widths \{'P': 7\}"):
        validate(CoreMap.from_arrays(snn.chip, snn.meta, arrays))
    arrays = snn.arrays()
    arrays["weights.data"] = arrays["weights.data"].astype(np.int16)
    with pytest.raises(CoreMapError, match=r"column weights.data is int16 with 1 dim\(s\); expected int8 \[W\]"):
        validate(CoreMap.from_arrays(snn.chip, snn.meta, arrays))


def test_header_schema_is_checked_on_load_not_only_the_hash(snn, tmp_path):
    """A header edited and re-hashed with nmc's own save passes the integrity check; the schema refuses it."""
    for edit, where in ((lambda m: m["inputs"][0].update(scale="x"), "meta.inputs[0].scale"),
                        (lambda m: m.pop("outputs"), "meta lacks ['outputs']"),
                        (lambda m: m["layers"][0].update(stage="later"), "meta.layers[0].stage"),
                        (lambda m: m["inputs"][0].update(scale=float("nan")), "expected a finite number"),
                        (lambda m: m.update(chips=[0, 1]), "meta.chips")):
        meta = json.loads(json.dumps(snn.meta))
        edit(meta)
        p = save_coremap(snn.replace(meta=meta), tmp_path / "edited.nmc")
        with pytest.raises(CoreMapError, match=re.escape(where)):
            load_coremap(p)
        with pytest.raises(CoreMapError, match=re.escape(where)):
            load_coremap(p, check=False)  # the structure is checked even without the design rules


def test_identical_compiles_are_identical_files(snn, tmp_path):
    a = save_coremap(snn, tmp_path / "a.nmc").read_bytes()
    b = save_coremap(load_coremap(save_coremap(snn, tmp_path / "b.nmc")), tmp_path / "c.nmc").read_bytes()
    assert a == b


# ============================================================================ emulator inputs
def _emulate_error(cm, inputs, **kw) -> str:
    with pytest.raises(InputError) as ei:
        nmc.emulate(cm, inputs, backend="reference", **kw)
    return str(ei.value)


def test_missing_input(snn):
    msg = _emulate_error(snn, {})
    assert msg.startswith("input 'spikes' (step, shape [40]) is missing") and "one array per graph input" in msg


def test_unknown_input_name(snn, spikes):
    msg = _emulate_error(snn, {"spikes": spikes, "spikez": spikes})
    assert "inputs ['spikez'] are not graph inputs of model 'lossless0'" in msg
    assert "'spikes'" in msg and "'lif1.v'" in msg  # the known inputs, states included


def test_wrong_static_shape(ann):
    msg = _emulate_error(ann, {"image": np.ones((2, 1, 7, 8))})
    assert msg == "static input 'image' has shape [2, 1, 7, 8]; expected [B, 1, 8, 8] or [1, 8, 8]"


def test_wrong_step_shape(snn):
    msg = _emulate_error(snn, {"spikes": np.ones((STEPS, 2, 39))})
    assert msg.startswith(f"step input 'spikes' has shape [{STEPS}, 2, 39]; expected [T, B, 40] or [T, 40]")
    assert "time axis first" in msg
    msg = _emulate_error(snn, {"spikes": np.ones(40)})  # no time axis
    assert msg.startswith("step input 'spikes' has shape [40]; expected [T, B, 40]")


def test_fewer_steps_than_asked(snn):
    msg = _emulate_error(snn, {"spikes": spike_inputs(0, 4, 2, 40)}, steps=STEPS)
    assert msg == f"step input 'spikes' has 4 steps but {STEPS} were asked for; give at least {STEPS} or run fewer steps"
    # the default number of steps is the model's
    msg = _emulate_error(snn, {"spikes": spike_inputs(0, 4, 2, 40)})
    assert f"has 4 steps but {STEPS} were asked for" in msg


def test_batch_size_mismatch(mixed):
    msg = _emulate_error(mixed, {"a": np.ones((3, 4)), "s": np.ones((STEPS, 2, 3))})
    assert "input 's' has batch size 2 but an earlier input has 3" in msg and "need the same" in msg


def test_bad_state_input(snn, spikes):
    msg = _emulate_error(snn, {"spikes": spikes, "lif1.v": np.zeros((2, 29))})
    assert "state input 'lif1.v' has shape [2, 29]" in msg
    msg = _emulate_error(snn, {"spikes": spikes, "lif1.v": np.zeros((3, 30))})
    assert "state input 'lif1.v' has batch size 3; expected 1 or 2" in msg


def test_nan_and_inf_inputs(ann, snn, spikes):
    img = np.ones((2, 1, 8, 8))
    img[1, 0, 3, 4] = np.nan
    assert _emulate_error(ann, {"image": img}) == ("input 'image' has 1 NaN or infinite value(s), the first at index "
                                                   "[1, 0, 3, 4] (nan); replace them with finite numbers")
    x = spikes.copy()
    x[0, 0, 0] = np.inf
    msg = _emulate_error(snn, {"spikes": x})
    assert "input 'spikes' has 1 NaN or infinite value(s), the first at index [0, 0, 0] (inf)" in msg


def test_non_numeric_input(ann):
    msg = _emulate_error(ann, {"image": np.full((1, 1, 8, 8), "a")})
    assert "input 'image' has dtype" in msg and "give numbers" in msg


def test_unknown_backend(snn, spikes):
    with pytest.raises(InputError) as ei:
        nmc.emulate(snn, {"spikes": spikes}, backend="gpu")
    assert str(ei.value) == "unknown emulator backend 'gpu'; choose one of ['numba', 'reference']"


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one(snn, spikes, steps):
    assert _emulate_error(snn, {"spikes": spikes}, steps=steps) == f"steps = {steps}; run at least 1 step"


def test_missing_and_unreadable_input_files(snn, tmp_path):
    p = tmp_path / "none.npz"
    assert _emulate_error(snn, p) == f"input file '{p}' does not exist"
    q = tmp_path / "bad.npz"
    q.write_bytes(b"not an npz")
    msg = _emulate_error(snn, q)
    assert f"input file '{q}' is not a readable .npz" in msg and "numpy.savez" in msg


# ============================================================================ chip descriptions
def _toml(tmp_path, edit) -> str:
    text = (PRESET_DIR / "tianjic.toml").read_text()
    new = edit(text)
    assert new != text
    p = tmp_path / "chip.toml"
    p.write_text(new)
    return str(p)


def test_unknown_preset_lists_presets():
    with pytest.raises(ChipSpecError) as ei:
        load_chip("tianjik")
    assert str(ei.value) == ("unknown chip preset 'tianjik'; presets: loihi, tianjic, tianjicx; "
                             "or pass the path of a chip .toml file")
    with pytest.raises(ChipSpecError, match="unknown chip preset 'tianjik'"):
        nmc.compile(lossless_snn(seed=0, steps=2), chip="tianjik")


def test_chip_toml_unknown_field(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("[core]\n", "[core]\nneurons_per_core = 256\n"))
    with pytest.raises(ChipSpecError) as ei:
        load_chip(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: section [core] has unknown field(s) ['neurons_per_core']; known fields:")
    assert "'neurons'" in msg


def test_chip_toml_unknown_top_level_key(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("cores_x = 12\n", "cores_x = 12\ncores_z = 1\n"))
    with pytest.raises(ChipSpecError, match=r"unknown top-level key\(s\) \['cores_z'\]; allowed"):
        load_chip(p)


def test_chip_toml_missing_field(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("axons = 256\n", ""))
    with pytest.raises(ChipSpecError, match=re.escape(f"{p}: section [core] is missing field(s) ['axons']")):
        load_chip(p)
    p = _toml(tmp_path, lambda t: t.replace("clock_hz = 300e6\n", ""))
    with pytest.raises(ChipSpecError, match="missing top-level field 'clock_hz'"):
        load_chip(p)


def test_chip_toml_missing_section(tmp_path):
    def drop_noc(t):
        start, end = t.index("[noc]"), t.index("[energy]")
        return t[:start] + t[end:]

    p = _toml(tmp_path, drop_noc)
    with pytest.raises(ChipSpecError, match=r"section \[noc\] is missing; it needs the fields hop_latency_cycles"):
        load_chip(p)


def test_chip_toml_negative_and_zero_values(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("neurons = 256", "neurons = -4"))
    with pytest.raises(ChipSpecError, match=re.escape(f"{p}: field 'core.neurons' must be >= 0, got -4")):
        load_chip(p)
    p = _toml(tmp_path, lambda t: t.replace("mac_pj = 1.246", "mac_pj = -1.0"))
    with pytest.raises(ChipSpecError, match=re.escape("field 'energy.mac_pj' must be >= 0, got -1.0")):
        load_chip(p)
    p = _toml(tmp_path, lambda t: t.replace("axons = 256", "axons = 0"))
    with pytest.raises(ChipSpecError, match=re.escape("field 'core.axons' must be > 0, got 0")):
        load_chip(p)


def test_chip_toml_wrong_type(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("neurons = 256", 'neurons = "many"'))
    with pytest.raises(ChipSpecError, match=re.escape("field 'core.neurons' must be an integer, got 'many'")):
        load_chip(p)


def test_chip_toml_bad_spike_encoding(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace('spike_encoding = "aer"', 'spike_encoding = "morse"'))
    with pytest.raises(ChipSpecError) as ei:
        load_chip(p)
    assert str(ei.value) == f"{p}: noc.spike_encoding is 'morse'; choose one of ['aer', 'bitmap']"


def test_chip_toml_bad_spike_input_timing(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace('spike_input_timing = "event"', 'spike_input_timing = "sometimes"'))
    with pytest.raises(ChipSpecError) as ei:
        load_chip(p)
    assert str(ei.value) == f"{p}: timing.spike_input_timing is 'sometimes'; choose one of ['event', 'dense']"


def test_chip_toml_zero_weight_bandwidth(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("weight_bandwidth_bytes_per_cycle = 13", "weight_bandwidth_bytes_per_cycle = 0"))
    with pytest.raises(ChipSpecError, match=re.escape("field 'core.weight_bandwidth_bytes_per_cycle' must be > 0, got 0")):
        load_chip(p)


def test_chip_toml_unsupported_widths(tmp_path):
    p = _toml(tmp_path, lambda t: t.replace("accumulator_bits = 32", "accumulator_bits = 48"))
    with pytest.raises(ChipSpecError, match="core.accumulator_bits is 48; supported range is 16..32"):
        load_chip(p)
    p = _toml(tmp_path, lambda t: t.replace("weight_bits = [8, 2, 1]", "weight_bits = [4]"))
    with pytest.raises(ChipSpecError, match=r"core.weight_bits is \[4\]; allowed values are 1, 2, 8"):
        load_chip(p)


def test_chip_file_missing_or_not_toml(tmp_path):
    with pytest.raises(ChipSpecError, match="does not exist"):
        load_chip(tmp_path / "none.toml")
    p = tmp_path / "broken.toml"
    p.write_text("name = \n")
    with pytest.raises(ChipSpecError, match="is not valid TOML"):
        load_chip(p)


def test_bad_override_keys_and_values():
    with pytest.raises(ChipSpecError) as ei:
        load_chip("tianjic", {"core.neuron": 64})
    msg = str(ei.value)
    assert msg.startswith("chip override 'core.neuron': no field 'neuron'; fields:") and "neurons" in msg
    with pytest.raises(ChipSpecError) as ei:
        load_chip("tianjic", {"cores.neurons": 64})
    msg = str(ei.value)
    assert msg.startswith("chip override 'cores.neurons': no section 'cores'; sections:") and "core" in msg
    with pytest.raises(ChipSpecError, match="field 'core.neurons' must be > 0, got 0"):
        load_chip("tianjic", {"core.neurons": 0})
    with pytest.raises(ChipSpecError, match="chip override 'core.bogus'"):
        nmc.compile(lossless_snn(seed=0, steps=2), overrides={"core.bogus": 1})


# ============================================================================ models
def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_unsupported_ops_are_listed_at_once_through_compile():
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
             helper.make_node("Erf", ["h"], ["a"], name="erf"),
             helper.make_node("Sin", ["h"], ["b"], name="sin"),
             helper.make_node("Cos", ["h"], ["c"], name="cos")]
    g = helper.make_graph(nodes, "m", [_vi("x", ["N", 3])], [_vi("a", ["N", 2]), _vi("b", ["N", 2]), _vi("c", ["N", 2])],
                          [numpy_helper.from_array(np.ones((2, 3), np.float32), "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(UnsupportedOpError) as ei:
        nmc.compile(m)
    msg = str(ei.value)
    assert msg.startswith("3 unsupported node(s) of 3 op type(s):")
    for name, op in (("erf", "Erf"), ("sin", "Sin"), ("cos", "Cos")):
        assert f"{op} x1 (node '{name}')" in msg
    assert "supported ops:" in msg and "Gemm" in msg and "fix:" in msg


def test_batchnorm_that_cannot_be_folded_is_a_scale_layer():
    # after a ReLU there is no Conv/Gemm to fold into: a per-channel scale layer, y = x * scale[c] + bias[c]
    b = ModelBuilder("bn")
    x = b.input("x", (2, 3, 3))
    b.output(b.batchnorm(b.relu(x, name="r"), [1, 2], [0, 1], [0, 0], [1, 1], name="bn1"))
    xin = np.arange(-9, 9, dtype=float).reshape(1, 2, 3, 3)
    cm = nmc.compile(b.build(), calib={"x": xin})
    out = list(nmc.emulate(cm, {"x": xin}).outputs.values())[0]
    eps = 1e-5  # ModelBuilder's epsilon: scale = gamma / sqrt(1 + eps)
    want = np.maximum(xin, 0) * np.array([1, 2]).reshape(1, 2, 1, 1) / np.sqrt(1 + eps) + \
        np.array([0, 1]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(out, want, atol=17 / 127)  # one int8 step of the output range (max 2 * 8 + 1)


def test_garbage_bytes_and_paths(tmp_path):
    with pytest.raises(ModelError) as ei:
        nmc.compile(b"\x08\x07garbage, not protobuf \xff\xfe")
    msg = str(ei.value)
    assert "the given bytes is not an ONNX model" in msg and "re-export" in msg
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x00" * 3 + b"junk")
    with pytest.raises(ModelError, match=re.escape(f"'{p}' is not an ONNX model")):
        nmc.compile(str(p))
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        nmc.compile(str(tmp_path / "missing.onnx"))


# ============================================================================ command line
@pytest.fixture
def files(tmp_path, spikes):
    model = tmp_path / "snn.onnx"
    onnx.save(lossless_snn(seed=0, steps=STEPS), str(model))
    calib = tmp_path / "calib.npz"
    np.savez(calib, spikes=spikes)
    return model, calib


def _cli(capsys, argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_input_file(capsys, tmp_path, files):
    model, calib = files
    out_map = tmp_path / "m.nmc"
    code, out, err = _cli(capsys, ["compile", model, "--calib", calib, "-o", out_map])
    assert code == 0 and out_map.exists(), err
    bad = tmp_path / "bad.npz"
    np.savez(bad, spike=np.zeros((STEPS, 1, 40)))
    code, out, err = _cli(capsys, ["run", out_map, "--input", bad, "--backend", "reference"])
    assert code == 2 and out == ""
    assert err.startswith("nmc run: error: inputs ['spike'] are not graph inputs of model 'lossless0'")
    code, out, err = _cli(capsys, ["run", out_map, "--input", calib, "--steps", "0"])
    assert code == 2 and "error: steps = 0; run at least 1 step" in err


def test_cli_compile_errors(capsys, tmp_path, files):
    model, calib = files
    out_map = tmp_path / "m.nmc"
    cases = [
        (["--chip", "tianjik"], "error: unknown chip preset 'tianjik'; presets: loihi, tianjic, tianjicx"),
        (["--chips", "0x1"], "error: --chips '0x1': expected 'XxY'"),
        (["--set", "core.neurons"], "error: --set 'core.neurons': expected FIELD=VALUE"),
        (["--set", "core.neuron=8"], "error: chip override 'core.neuron': no field 'neuron'"),
        (["--set", "core.phases_per_step=2", "--depth", "refuse"],
         "error: 1 design-rule violation(s):\n  - phases-per-step:"),
        (["--set", "cores_x=1", "--set", "cores_y=1", "--set", "core.neurons=8", "--chips", "1x1"],
         "error: the model needs"),
        (["--placement", "spiral"], "error: unknown placement strategy 'spiral'"),
    ]
    for extra, expect in cases:
        code, out, err = _cli(capsys, ["compile", model, "--calib", calib, "-o", out_map, *extra])
        assert code == 2, (extra, err)
        assert err.startswith("nmc compile: error: ") and expect in err, (extra, err)
        assert not out_map.exists()
    code, out, err = _cli(capsys, ["compile", tmp_path / "none.onnx", "-o", out_map])
    assert code == 2 and "error: cannot read ONNX model" in err


def test_cli_damaged_core_map(capsys, tmp_path, saved):
    p = _rewrite(saved, tmp_path / "v9.nmc", header_fn=lambda h: h.update(format_version=9))
    code, out, err = _cli(capsys, ["info", p])
    assert code == 2 and "nmc info: error:" in err and "format version 9" in err and "recompile" in err
    code, out, err = _cli(capsys, ["run", tmp_path / "none.nmc", "--input", tmp_path / "x.npz"])
    assert code == 2 and "does not exist" in err


def test_header_indices_are_checked_against_the_tables(snn):
    """Header entries that pass the schema but point outside the tables (each crashed a consumer before)."""
    def edited(edit):
        meta = json.loads(json.dumps(snn.meta))
        edit(meta)
        return snn.replace(meta=meta)

    assert snn.meta["state_outputs"] and any(s["target"] == "neuron" for s in snn.meta["states"])
    n_s = snn.neurons.state_init.shape[1]
    cases = [
        (lambda m: m["state_outputs"][0].update(word=5), f"meta.state_outputs[0].word = 5 is not a state word (0 .. "
                                                         f"{n_s - 1})"),
        (lambda m: m["state_outputs"][0].update(neurons=[10 ** 6] * len(m["state_outputs"][0]["neurons"])),
         "meta.state_outputs[0].neurons point outside the"),
        (lambda m: next(s for s in m["states"] if s["target"] == "neuron").pop("neurons"),
         "targets neurons but lacks one neuron per element"),
        (lambda m: m["outputs"][0].update(shape=[10 ** 3]), "has shape [1000] (1000 values) but"),
        (lambda m: m["layers"].pop(), "names none of the header's"),
        (lambda m: m["compile"].update(warnings=3), "meta.compile.warnings is int; expected a list"),
    ]
    for edit, msg in cases:
        with pytest.raises(CoreMapError, match=re.escape(msg)):
            validate(edited(edit))


def test_an_empty_output_range_is_refused(snn):
    # NumPy's clip and the chip's clamp disagree on lo > hi: such a core map is malformed, not emulated
    bad = tampered(snn, cores__out_lo=(0, 3), cores__out_hi=(0, 2))
    with pytest.raises(CoreMapError, match=r"core 0: output range cores.out_lo = 3 > cores.out_hi = 2"):
        validate(bad)


@pytest.mark.parametrize("routing", [{"traffic_hops": 5.0}, {"traffic_hops": 5.0, "max_link_load": "x", "pairs": None,
                                                              "chip_crossings": 0, "mean_pair_hops": 1.0,
                                                              "max_table_entries": 2}])
def test_info_of_a_core_map_whose_routing_summary_was_edited(snn, tmp_path, capsys, routing):
    # found by the fuzz campaign (nmc:10778): a meta.routing without 'pairs' made `nmc info` end in a KeyError.
    # The summary is informational: info prints the rest and says the summary is damaged
    p = save_coremap(snn.replace(meta={**snn.meta, "routing": routing}), tmp_path / "m.nmc")
    assert cli.main(["info", str(p)]) == 0
    assert "placement: (the routing summary in this core map is incomplete or damaged)" in capsys.readouterr().out
