"""Neuron models (nmc.neurons): hand-derived integer traces, NumPy step == Numba step on random states,
and each ONNX function body == the model's float step in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from nmc.chip import PRESET_DIR, load_chip
from nmc.errors import ChipSpecError, RegistryError
from nmc.frontend import nmc_ops
from nmc.neurons import MODELS, NeuronModel, get_model, register, soma_cycles
from nmc.opschema import MIN_OPSET, NMC_DOMAIN

CORE = load_chip("tianjic").core  # membrane 28 bits, beta_shift 8


def params(model: NeuronModel, **values) -> np.ndarray:
    return np.array([values[p.name] for p in model.core_params], dtype=np.int64)


def trace(model: NeuronModel, accs, cp, init=None, lo=-128, hi=127):
    """Run one neuron over ``accs`` with the NumPy and the Numba step; they must agree at every step.
    Returns (outputs [T], states [T, S])."""
    S = len(model.state)
    st_ref = np.zeros((1, S), np.int64) if init is None else np.array([init], np.int64)
    st_nb = st_ref.copy()
    nparam = np.zeros((1, max(1, len(model.neuron_params))), np.int64)
    outs, states = [], []
    for a in accs:
        acc = np.array([a], np.int64)
        o_ref = model.ref_step(acc.copy(), st_ref, nparam, cp, lo, hi, CORE)
        o_nb = np.zeros(1, np.int64)
        model.nb_step(0, 1, acc.copy(), st_nb, nparam, cp, lo, hi, CORE.membrane_bits, CORE.beta_shift, o_nb)
        assert o_ref.tolist() == o_nb.tolist() and st_ref.tolist() == st_nb.tolist(), (model.name, a)
        outs.append(int(o_ref[0]))
        states.append(st_ref[0].tolist())
    return outs, states


def test_lif_leak_is_the_hand_derived_floor():
    # beta 0.9 on tianjic: bm = round(0.9 * 2^8) = round(230.4) = 230; u = floor(v * 230 / 256)
    lif = MODELS["lif"]
    cp = params(lif, threshold=1000, v_reset=0, v_leak=0, beta_mult=230, reset_mode=0, spike_ge=0, reset_delay=0)
    _, st = trace(lif, [0, 0], cp, init=[100])
    assert [s[0] for s in st] == [89, 79]  # floor(23000/256) = floor(89.84); floor(20470/256) = floor(79.96)
    _, st = trace(lif, [0], cp, init=[-100])
    assert st[0][0] == -90  # floor(-89.84): the shift floors towards minus infinity


def test_cubalif_hand_trace():
    # alpha 0.5 -> am 128, beta 0.75 -> bm 192 (2^8 scale); threshold 10, subtract reset, fire on >
    #   t  acc   i = floor(i*128/256) + acc   u = floor(v*192/256) + i   s   v'
    #   1   8    0 + 8 = 8                    0 + 8 = 8                  0   8
    #   2   8    4 + 8 = 12                   6 + 12 = 18                1   8
    #   3   8    6 + 8 = 14                   6 + 14 = 20                1   10
    #   4   0    7 + 0 = 7                    7 + 7 = 14  (1920/256=7.5) 1   4
    #   5   0    3 (896/256=3.5)              3 + 3 = 6                  0   6
    #   6  -10   1 - 10 = -9                  4 - 9 = -5  (1152/256=4.5) 0   -5
    #   7   0    floor(-4.5) = -5             floor(-3.75) = -4; -9      0   -9
    cuba = MODELS["cubalif"]
    cp = params(cuba, threshold=10, v_reset=0, alpha_mult=128, beta_mult=192, reset_mode=0, spike_ge=0)
    s, st = trace(cuba, [8, 8, 8, 0, 0, -10, 0], cp)
    assert s == [0, 1, 1, 1, 0, 0, 0]
    assert [x[0] for x in st] == [8, 12, 14, 7, 3, -9, -5]
    assert [x[1] for x in st] == [8, 8, 10, 4, 6, -5, -9]


def test_lif_refractory_hand_trace():
    # IF (beta 1), threshold 2 (fire on >), zero reset to 0, refractory 2 steps, input 1 every step:
    # v: 1, 2, 3 -> spike, reset to 0, counter 2; two silent steps that ignore the input; then again
    ref = MODELS["lif_refractory"]
    cp = params(ref, threshold=2, v_reset=0, v_leak=0, beta_mult=256, reset_mode=1, spike_ge=0, refractory=2)
    s, st = trace(ref, [1] * 8, cp)
    assert s == [0, 0, 1, 0, 0, 0, 0, 1]
    assert [x[0] for x in st] == [1, 2, 0, 0, 0, 1, 2, 0]
    assert [x[1] for x in st] == [0, 0, 2, 1, 0, 0, 0, 2]


def test_alif_hand_trace():
    # IF membrane, threshold 2 (fire on >), subtract the adapted threshold, adapt 2, rho 0.5 -> rm 128; acc 3 per step
    #   t  th = 2 + a   u = v + 3   s   v'        a' = floor(a * 128 / 256) + 2 s
    #   1   2           3           1   1         0 + 2 = 2
    #   2   4           4           0   4         1
    #   3   3           7           1   4         0 + 2 = 2
    #   4   4           7           1   3         1 + 2 = 3
    #   5   5           6           1   1         1 + 2 = 3
    #   6   5           4           0   4         1
    alif = MODELS["alif"]
    cp = params(alif, threshold=2, v_reset=0, v_leak=0, beta_mult=256, reset_mode=0, spike_ge=0, rho_mult=128, adapt=2)
    s, st = trace(alif, [3] * 6, cp)
    assert s == [1, 0, 1, 1, 1, 0]
    assert [x[0] for x in st] == [1, 4, 4, 3, 1, 4]
    assert [x[1] for x in st] == [2, 1, 2, 3, 3, 1]


def test_lift_reads_each_neurons_own_parameters():
    # two neurons, zero reset (core-wide), fire on >, acc 3 per step; per neuron (thr, vr, vl, bm):
    #   A (4, 0, 0, 256: IF):  u = 3; 6 > 4 -> 0; 3; 6 -> 0                        spikes 0 1 0 1
    #   B (5, -1, 1, 128):     leak(v) = 1 + floor((v - 1) * 128 / 256)
    #     t1 v=0: 1 + floor(-0.5) = 0, u = 3      t2 v=3: 1 + 1 = 2, u = 5 (not > 5)
    #     t3 v=5: 1 + 2 = 3, u = 6 > 5 -> vr = -1  t4 v=-1: 1 + floor(-1) = 0, u = 3   spikes 0 0 1 0
    lift = MODELS["lift"]
    nparam = np.array([[4, 0, 0, 256], [5, -1, 1, 128]], np.int64)
    cp = params(lift, reset_mode=1, spike_ge=0, reset_delay=0)
    st_ref, st_nb = np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64)
    spikes, vs = [], []
    for _ in range(4):
        acc = np.full(2, 3, np.int64)
        o_ref = lift.ref_step(acc.copy(), st_ref, nparam, cp, 0, 1, CORE)
        o_nb = np.zeros(2, np.int64)
        lift.nb_step(0, 2, acc.copy(), st_nb, nparam, cp, 0, 1, CORE.membrane_bits, CORE.beta_shift, o_nb)
        assert o_ref.tolist() == o_nb.tolist() and st_ref.tolist() == st_nb.tolist()
        spikes.append(o_ref.tolist())
        vs.append(st_ref[:, 0].tolist())
    assert spikes == [[0, 0], [1, 0], [0, 1], [1, 0]]
    assert vs == [[3, 3], [0, 5], [3, -1], [0, 3]]


def test_li_hand_trace():
    # beta 0.75 -> bm 192, v_leak 0; the output is the membrane: v' = floor(v * 192 / 256) + acc
    #   8; floor(6) + 8 = 14; floor(10.5) + 0 = 10; floor(7.5) - 20 = -13; floor(-9.75) + 0 = -10
    li = MODELS["li"]
    out, st = trace(li, [8, 8, 0, -20, 0], params(li, v_leak=0, beta_mult=192))
    assert out == [8, 14, 10, -13, -10] and [x[0] for x in st] == out
    hi_m = (1 << (CORE.membrane_bits - 1)) - 1
    out, _ = trace(li, [5], params(li, v_leak=0, beta_mult=256), init=[hi_m - 2])
    assert out == [hi_m]  # saturates at the membrane word


def test_first_spike_time_hand_trace():
    # f starts at -1, k at 0; spikes at steps 2 and 4: f = -1, -1, 2, 2, 2 (the first one stays), k counts steps
    fst = MODELS["first_spike"]
    out, st = trace(fst, [0, 0, 1, 0, 1], np.zeros(0, np.int64), init=[-1, 0])
    assert out == [-1, -1, 2, 2, 2]
    assert [x[1] for x in st] == [1, 2, 3, 4, 5]
    out, _ = trace(fst, [0] * 6, np.zeros(0, np.int64), init=[-1, 0])
    assert out == [-1] * 6  # never spiked: -1


def test_lif_tx_hand_trace_integrate_fire_reset_then_leak():
    # TianjicX order (BiMap prim_08): integrate (unless refractory), fire on u > th, reset, then leak
    # V <- floor(V * 192 / 256) - 1, floor at -3; threshold 5, reset mode 2 (subtract dv = 2), refractory 1
    #   t  acc  r   u              s   w       v' = max(floor(0.75 w) - 1, -3)   r'
    #   1   4   0   0 + 4 = 4      0   4       3 - 1 = 2                         0
    #   2   4   0   2 + 4 = 6      1   6-2=4   3 - 1 = 2                         1
    #   3   4   1   2 (ignored)    0   2       floor(1.5) - 1 = 0                0
    #   4   0   0   0              0   0       0 - 1 = -1                        0
    #   5  -20  0   -1 - 20 = -21  0   -21     floor(-15.75) - 1 = -17 -> -3     0
    #   6   0   0   -3             0   -3      floor(-2.25) - 1 = -4 -> -3       0
    tx = MODELS["lif_tx"]
    cp = params(tx, threshold=5, v_reset=0, dv=2, leak=-1, beta_mult=192, v_min=-3, reset_mode=2, refractory=1)
    s, st = trace(tx, [4, 4, 4, 0, -20, 0], cp)
    assert s == [0, 1, 0, 0, 0, 0]
    assert [x[0] for x in st] == [2, 2, 0, -1, -3, -3]
    assert [x[1] for x in st] == [0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("mode, spikes, v", [(0, [1, 0], [-2, 3]),   # to v_reset = -2; then 3 is not > 3
                                             (1, [1, 1], [2, 4]),    # 5 - 3 = 2; 2 + 5 = 7 > 3, 7 - 3 = 4
                                             (2, [1, 1], [4, 8]),    # 5 - dv 1 = 4; 9 - 1 = 8
                                             (3, [1, 1], [5, 10])])  # none: the membrane keeps climbing
def test_lif_tx_reset_modes_are_numbered_as_the_chip_numbers_them(mode, spikes, v):
    tx = MODELS["lif_tx"]
    lo = -(1 << (CORE.membrane_bits - 1))
    cp = params(tx, threshold=3, v_reset=-2, dv=1, leak=0, beta_mult=256, v_min=lo, reset_mode=mode, refractory=0)
    s, st = trace(tx, [5, 5], cp)
    assert s == spikes and [x[0] for x in st] == v


def test_lif_tx_floor_raises_the_threshold_and_the_membrane_saturates_at_28_bits():
    tx = MODELS["lif_tx"]
    # threshold -5 under a floor of 2: the neuron fires on u > 2 (BiMap: Vth = max(Vth, VL))
    cp = params(tx, threshold=-5, v_reset=0, dv=0, leak=0, beta_mult=256, v_min=2, reset_mode=3, refractory=0)
    s, st = trace(tx, [0, 1], cp)
    assert s == [0, 1] and [x[0] for x in st] == [2, 3]  # the floor lifts 0 to 2 at step 1; 2 + 1 = 3 > 2
    top = (1 << 27) - 1  # 28-bit membrane: 2^27 - 1 = 134217727
    cp = params(tx, threshold=top, v_reset=0, dv=0, leak=5, beta_mult=256, v_min=-(1 << 27), reset_mode=3, refractory=0)
    s, st = trace(tx, [100], cp, init=[top - 10, 0])
    assert s == [0] and st[0][0] == top  # sat(top + 90) = top; not > top; leak +5 saturates again


@pytest.mark.parametrize("floor, want", [
    # floor (TianjicX): 9/4 = 2.25 -> 2; -5/4 = -1.25 -> -2 (entry 256 - 2 = 254); 1000/4 = 250 -> 127; -1000/4 -> -128
    (1, [2 - 128, 254 - 128, 127 - 128, 128 - 128]),
    # round half up: (9 + 2) >> 2 = 2; (-5 + 2) >> 2 = -1 (entry 255); the same clamps
    (0, [2 - 128, 255 - 128, 127 - 128, 128 - 128]),
])
def test_lut_soma_indexes_its_table_as_the_chip(floor, want):
    """Index = clamp(requant(acc), -128, 127) of an 8-bit table; negative indices wrap to 256 + index (BiMap
    prim_07); the table here holds entry e at position e: lut[e] = e - 128."""
    from nmc.neurons.lut import pack_table
    lut = MODELS["lut"]
    cp = np.zeros(len(lut.core_params), np.int64)
    cp[0], cp[1] = floor, CORE.lut_index_bits
    assert CORE.lut_index_bits == 8
    cp[2:2 + 64] = pack_table(np.arange(256) - 128)  # bytes 0x80, 0x81, ..., four to a word
    assert cp[2] == 0x83828180  # entries 0..3 = -128..-125: bytes 0x80..0x83, entry 0 lowest
    acc = np.array([9, -5, 1000, -1000], np.int64)
    nparam = np.tile([1, 2], (4, 1)).astype(np.int64)  # multiplier 1, shift 2: divide by 4
    out_ref = lut.ref_step(acc.copy(), np.zeros((4, 0), np.int64), nparam, cp, -128, 127, CORE)
    out_nb = np.zeros(4, np.int64)
    lut.nb_step(0, 4, acc.copy(), np.zeros((4, 0), np.int64), nparam, cp, -128, 127, CORE.membrane_bits,
                CORE.beta_shift, out_nb)
    assert out_ref.tolist() == out_nb.tolist() == want
    # with an unsigned output range the bytes read as uint8: entry 2 is byte 0x82 = 130 (int8: -126)
    assert lut.ref_step(acc[:1].copy(), np.zeros((1, 0), np.int64), nparam[:1], cp, 0, 255, CORE).tolist() == [130]


def test_ann_floor_requantiser_hand_values():
    ann = MODELS["ann"]
    nparam = np.array([[3, 2], [3, 2], [1, 0]], np.int64)  # y = floor(acc * 3 / 4)
    out = ann.ref_step(np.array([5, -5, 300], np.int64), np.zeros((3, 0), np.int64), nparam, np.array([1], np.int64),
                       -128, 127, CORE)
    assert out.tolist() == [3, -4, 127]  # 15/4 = 3.75 -> 3; -15/4 = -3.75 -> -4; clamp


def test_lfsr_first_outputs_and_threshold_noise_by_hand():
    """BiMap prim_08's LFSR (taps 0, 1, 2, 3, 5, 7 into bit 31) from 0xACE1, by hand:
    0xACE1: bits 0,1,2,3,5,7 = 1,0,0,0,1,1 -> 1: q1 = 0x80000000 | 0x5670 = 0x80005670 (signed -2147461520);
    0x70:   bits 0,1,2,3,5,7 = 0,0,0,0,1,0 -> 1: q2 = 0x80000000 | 0x40002B38 = 0xC0002B38 (-1073730760);
    0x38:   bits 0,1,2,3,5,7 = 0,0,0,1,1,0 -> 0: q3 = 0x6000159C (1610618268).
    Noise with VM = 0xFF: negative o -> -((-o - 1) & 0xFF): 0x7FFFA98F & 0xFF = 0x8F -> -143; 0x3FFFD4C7 -> -199;
    positive: 0x9C = 156."""
    from nmc.neurons.lif_tx_rand import lfsr_next, lfsr_noise, lfsr_seeds
    q1 = lfsr_next(0xACE1)
    q2 = lfsr_next(q1)
    q3 = lfsr_next(q2)
    assert (q1, q2, q3) == (0x80005670, 0xC0002B38, 0x6000159C)
    assert lfsr_noise(np.array([q1, q2, q3]), 8).tolist() == [-143, -199, 156]
    assert lfsr_noise(np.array([q1, q2, q3]), 0).tolist() == [0, 0, 0]
    # seeds: MurmurHash3's fmix32(seed + i * 0x9E3779B9); fmix32(1) = 0x514E28B7, fmix32(0) = 0 -> 1
    qh, ql = lfsr_seeds(1, 1)
    assert (qh[0], ql[0]) == (0x514E, 0x28B7)
    qh, ql = lfsr_seeds(0, 1)
    assert (qh[0], ql[0]) == (0, 1)
    # the neuron: threshold 200 + noise = 57, 1, 356; input 100 per step, IF, no reset: u = 100, 200, 300
    rnd = MODELS["lif_tx_rand"]
    lo = -(1 << (CORE.membrane_bits - 1))
    cp = params(rnd, threshold=200, v_reset=0, dv=0, leak=0, beta_mult=256, v_min=lo, reset_mode=3, refractory=0,
                rand_bits=8)
    s, st = trace(rnd, [100, 100, 100], cp, init=[0, 0, 0, 0xACE1])
    assert s == [1, 1, 0]
    assert [x[0] for x in st] == [100, 200, 300]
    assert st[-1][2:] == [0x6000, 0x159C]


def test_count_and_ann_hand_values():
    s, st = trace(MODELS["count"], [1, 1, 0, 1], np.zeros(0, np.int64), lo=0, hi=2)
    assert s == [1, 2, 2, 2] and st[-1] == [2]  # saturates at hi
    ann = MODELS["ann"]
    nparam = np.array([[3, 2], [3, 2], [1, 0]], np.int64)  # y = round_half_up(acc * 3 / 4)
    out = ann.ref_step(np.array([5, -5, 300], np.int64), np.zeros((3, 0), np.int64), nparam, np.zeros(0, np.int64),
                       -128, 127, CORE)
    assert out.tolist() == [4, -4, 127]  # 15/4 = 3.75 -> 4; -15/4 = -3.75 -> (-15 + 2) >> 2 = -4; clamp


@pytest.mark.parametrize("name", [m for m in MODELS])
def test_numpy_step_equals_numba_step_on_random_states(name):
    model = MODELS[name]
    rng = np.random.default_rng(7)
    n = 64
    lo_m, hi_m = -(1 << (CORE.membrane_bits - 1)), (1 << (CORE.membrane_bits - 1)) - 1
    for trial in range(20):
        cp = np.array([rng.integers(p.lo(CORE), min(p.hi(CORE), 600) + 1) for p in model.core_params], np.int64)
        nparam = np.stack([rng.integers(p.lo(CORE), min(p.hi(CORE), 40) + 1, size=n) for p in model.neuron_params],
                          axis=1) if model.neuron_params else np.zeros((n, 0), np.int64)
        state = rng.integers(-800, 800, size=(n, len(model.state))).astype(np.int64)
        if trial % 5 == 0:  # near saturation
            state = np.where(rng.random(state.shape) < 0.5, hi_m - 3, lo_m + 3).astype(np.int64)
        acc = rng.integers(-1000, 1000, size=n).astype(np.int64)
        lo, hi = (0, 255) if trial % 2 else (-128, 127)
        st_ref, st_nb = state.copy(), state.copy()
        o_ref = model.ref_step(acc.copy(), st_ref, nparam, cp, lo, hi, CORE)
        o_nb = np.zeros(n, np.int64)
        model.nb_step(0, n, acc.copy(), st_nb, nparam, cp, lo, hi, CORE.membrane_bits, CORE.beta_shift, o_nb)
        np.testing.assert_array_equal(o_ref, o_nb)
        np.testing.assert_array_equal(st_ref, st_nb)


def _ort_step(schema, attrs, feeds):
    node = helper.make_node(schema.name, list(schema.inputs), list(schema.outputs), domain=NMC_DOMAIN, **attrs)
    n = next(iter(feeds.values())).shape[0]
    g = helper.make_graph([node], "f", [helper.make_tensor_value_info(p, TensorProto.FLOAT, [n]) for p in schema.inputs],
                          [helper.make_tensor_value_info(p, TensorProto.FLOAT, [n]) for p in schema.outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", MIN_OPSET), helper.make_opsetid(NMC_DOMAIN, 1)],
                          functions=nmc_ops.function_protos([schema.name]))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


CASES = {
    "LIFTXRand": [dict(beta=b, threshold=th, reset_mode=m, v_reset=-0.25, dv=0.5, leak=0.0, floor=fl, v_min=-0.5,
                       refractory=1, rand_bits=rb)
                  for b in (0.75, 1.0) for th in (1.0, 3.0) for m in ("zero", "subtract", "dv", "none")
                  for fl in (0, 1) for rb in (0, 1, 3)],
    "LIFTX": [dict(beta=b, threshold=th, reset_mode=m, v_reset=-0.25, dv=0.5, leak=lk, floor=fl, v_min=-0.5,
                   refractory=r)
              for b in (0.75, 1.0) for th in (1.0, -1.0) for m in ("zero", "subtract", "dv", "none")
              for lk in (0.0, -0.125) for fl in (0, 1) for r in (0, 2)],
    "ALIF": [dict(beta=b, threshold=1.0, reset_mode=m, v_reset=-0.25, v_leak=0.125, spike_ge=ge, rho=r, adapt=0.5)
             for b in (0.75, 1.0) for m in ("subtract", "zero", "none") for ge in (0, 1) for r in (0.0, 0.5)],
    "CubaLIF": [dict(alpha=a, beta=b, threshold=1.0, reset_mode=m, v_reset=-0.5, spike_ge=ge)
                for a, b in ((0.5, 0.75), (1.0, 1.0), (0.0, 0.25)) for m in ("subtract", "zero", "none") for ge in (0, 1)],
    "LI": [dict(beta=b, v_leak=vl, gain=g) for b in (0.75, 1.0, 0.0) for vl in (0.0, -0.5) for g in (1.0, 0.5)],
    "FirstSpikeTime": [{}],
    "LIFRefractory": [dict(beta=b, threshold=1.0, reset_mode=m, v_reset=-0.25, v_leak=0.125, spike_ge=ge, refractory=r)
                      for b in (0.75, 1.0) for m in ("subtract", "zero", "none") for ge in (0, 1) for r in (0, 2)],
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_function_body_equals_float_step(op):
    """The ONNX function (what onnxruntime runs) and the model's float step agree, exact threshold hits included."""
    schema = nmc_ops.get_schema(op)
    model = next(m for m in MODELS.values() if m.onnx is schema)
    rng = np.random.default_rng(3)
    n = 48
    feeds = {p: np.concatenate([rng.normal(size=n - 4), [1.0, 0.5, 0.0, 1.0]]).astype(np.float32) for p in schema.inputs}
    if "r" in feeds:
        feeds["r"] = rng.integers(0, 3, size=n).astype(np.float32)
    for p in ("qh", "ql"):  # an LFSR register's halves: 16-bit integers
        if p in feeds:
            feeds[p] = rng.integers(0, 1 << 16, size=n).astype(np.float32)
    for attrs in CASES[op]:
        got = _ort_step(schema, attrs, feeds)
        a64 = {**schema.defaults(), **{k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in attrs.items()}}
        want = model.float_step(a64, *(feeds[p].astype(np.float64) for p in schema.inputs))
        if model.spiking:
            np.testing.assert_array_equal(got[0], want[0], err_msg=str(attrs))  # spikes exactly
        for g, w in zip(got[0 if not model.spiking else 1:], want[0 if not model.spiking else 1:]):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=str(attrs))


def test_lift_function_body_equals_the_lif_float_step_per_neuron():
    """nmc::LIFT in onnxruntime == LIF's float semantics with every neuron's own beta/threshold/v_reset/v_leak."""
    schema = nmc_ops.get_schema("LIFT")
    rng = np.random.default_rng(5)
    n = 48
    feeds = {"x": np.concatenate([rng.normal(size=n - 4), [1.0, 0.5, 0.0, 1.0]]).astype(np.float32),
             "v": rng.normal(size=n).astype(np.float32),
             "beta": rng.choice([0.0, 0.5, 0.875, 1.0], size=n).astype(np.float32),
             "threshold": rng.choice([0.5, 1.0, 2.0], size=n).astype(np.float32),
             "v_reset": rng.choice([0.0, -0.25], size=n).astype(np.float32),
             "v_leak": rng.choice([0.0, 0.125], size=n).astype(np.float32)}
    lif = MODELS["lif"]
    for mode in ("subtract", "zero", "none"):
        for ge in (0, 1):
            for rd in (0, 1):
                attrs = dict(reset_mode=mode, spike_ge=ge, reset_delay=rd, gain=0.5)
                got = _ort_step(schema, attrs, feeds)
                a = {**attrs, **{p: feeds[p].astype(np.float64) for p in schema.params}}
                want = lif.float_step(a, feeds["x"].astype(np.float64), feeds["v"].astype(np.float64))
                np.testing.assert_array_equal(got[0], want[0], err_msg=str(attrs))
                np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6, err_msg=str(attrs))


def test_registry_refuses_a_second_model_of_a_name_or_code_and_unknown_names():
    lif = MODELS["lif"]
    with pytest.raises(RegistryError, match="already registered"):
        register(lif)
    with pytest.raises(RegistryError, match="no neuron model 'adex'"):
        get_model("adex")


def test_new_models_take_lif_timing_unless_the_chip_names_theirs(tmp_path):
    chip = load_chip("tianjic", {"timing.soma_lif_cycles": 3, "timing.soma_ann_cycles": 1})
    assert soma_cycles(chip, MODELS["cubalif"]) == 3
    assert soma_cycles(chip, MODELS["lif_refractory"]) == 3
    assert soma_cycles(chip, MODELS["ann"]) == 1
    # a chip file may time any model: timing.soma_<model>_cycles
    text = (PRESET_DIR / "tianjic.toml").read_text().replace("[timing]\n", "[timing]\nsoma_cubalif_cycles = 7\n", 1)
    (tmp_path / "mine.toml").write_text(text)
    mine = load_chip(tmp_path / "mine.toml")
    assert soma_cycles(mine, MODELS["cubalif"]) == 7
    assert soma_cycles(mine, MODELS["lif_refractory"]) == mine.timing.soma_lif_cycles
    assert soma_cycles(mine.with_overrides({"timing.soma_cubalif_cycles": 9}), MODELS["cubalif"]) == 9
    with pytest.raises(ChipSpecError, match="timing.soma_cubalif_cycles"):
        load_chip(tmp_path / "mine.toml", {"timing.soma_cubalif_cycles": -1})
