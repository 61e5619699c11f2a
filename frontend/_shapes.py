"""Output-shape arithmetic shared by the builder, the importer and the interpreter (batch excluded)."""
from __future__ import annotations


def window_out(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1) -> int:
    """Output length of a sliding window (floor mode)."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def conv_out_shape(x: tuple[int, ...], w: tuple[int, ...], strides, pads, dilations) -> tuple[int, int, int]:
    _, h, wd = x
    co, _, kh, kw = w
    return (co,
            window_out(h, kh, strides[0], pads[0], pads[2], dilations[0]),
            window_out(wd, kw, strides[1], pads[1], pads[3], dilations[1]))


def pool_out_shape(x: tuple[int, ...], kernel, strides, pads) -> tuple[int, int, int]:
    c, h, wd = x
    return (c,
            window_out(h, kernel[0], strides[0], pads[0], pads[2]),
            window_out(wd, kernel[1], strides[1], pads[1], pads[3]))
