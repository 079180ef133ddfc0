"""The processing unit: it computes each training operation by walking its dataflow, and counts.

Every method returns ``(result, PassCount)``. Conv passes walk the window order
(:mod:`.window`) with a real window register: each step shifts the register and fetches
only the newly covered inputs, and the MACs use the register's contents, so a wrong walk
gives wrong numbers, not only wrong counts. Vectorised across channels (one window
position is one small matmul); meant for small layers (tests), the epoch figures use the
closed forms of :mod:`.cost`, which the tests prove equal to these walked counts.

Dataflows (one sample; see docs/accel_tinycl.md):
- conv_fwd: output-stationary; window register holds ``Cin x Kh x Kw``; kernels in registers
  (if they fit, else re-read every position); each output written once.
- conv_dx: the same walk over dY zero-inserted by the stride and padded by ``K-1-p`` (zeros
  generated, not read), with the flipped, transposed kernel; each dX written once.
- conv_dw: the forward walk over x again; at each position ``dW += dY[:, i, j] x window``
  into accumulators (registers if they fit, else read-modify-write in gradient memory).
- dense: the M MAC units form one M-input dot product (adder tree); dense_dw is an outer product.
"""

from __future__ import annotations

import math

import torch

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.kernels.macs import pair

from .arch import Arch
from .counts import PassCount, dot_cycles, window_cycles
from .window import check_order, dense_valid, moves

_pair = pair


def _walk(order, canvas, mask, ho, wo, kh, kw, sh, sw, pc: PassCount, mem: str):
    """Yield ``(i, j, window)`` in ``order``; fetched valid inputs are counted as reads of ``mem``."""
    c = canvas.shape[0]
    maskf = mask.to(canvas.dtype)

    def fetch(r_lo, r_hi, c_lo, c_hi):
        pc.read(mem, c * int(mask[r_lo:r_hi, c_lo:c_hi].sum()))
        return canvas[:, r_lo:r_hi, c_lo:c_hi] * maskf[r_lo:r_hi, c_lo:c_hi]

    reg = None
    for i, j, mv in moves(order, ho, wo):
        r0, c0 = i * sh, j * sw
        if mv == "load" or (mv in ("right", "left") and sw >= kw) or (mv == "down" and sh >= kh):
            reg = fetch(r0, r0 + kh, c0, c0 + kw)
        elif mv == "right":
            reg = torch.cat([reg[:, :, sw:], fetch(r0, r0 + kh, c0 + kw - sw, c0 + kw)], dim=2)
        elif mv == "left":
            reg = torch.cat([fetch(r0, r0 + kh, c0, c0 + sw), reg[:, :, :kw - sw]], dim=2)
        else:  # down
            reg = torch.cat([reg[:, sh:, :], fetch(r0 + kh - sh, r0 + kh, c0, c0 + kw)], dim=1)
        pc.reg_reads += c * int(mask[r0:r0 + kh, c0:c0 + kw].sum())
        yield i, j, reg
    pc.reg_reads -= pc.reads[mem]   # uses minus fetches = inputs served from the register


def _forward_canvas(x, kh, kw, sh, sw, ph, pw):
    """Zero-padded input (C, H+2p, W+2p), its validity mask and the output size."""
    c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise TinyclError(f"conv input {h}x{w} is too small for a {kh}x{kw} kernel with padding {ph},{pw}")
    canvas = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    rv = dense_valid(h + 2 * ph, ph, h)
    cv = dense_valid(w + 2 * pw, pw, w)
    return canvas, torch.tensor(rv)[:, None] & torch.tensor(cv)[None, :], ho, wo


def _dx_canvas(dy, h, w, kh, kw, sh, sw, ph, pw):
    """dY zero-inserted by the stride, offset by K-1-p, on an (H+Kh-1) x (W+Kw-1) canvas."""
    co, ho, wo = dy.shape
    hc, wc = h + kh - 1, w + kw - 1
    rv = dense_valid(hc, kh - 1 - ph, ho, sh)
    cv = dense_valid(wc, kw - 1 - pw, wo, sw)
    canvas = dy.new_zeros(co, hc, wc)
    rows = [kh - 1 - ph + t * sh for t in range(ho)]
    cols = [kw - 1 - pw + t * sw for t in range(wo)]
    ri = [t for t, q in enumerate(rows) if 0 <= q < hc]
    ci = [t for t, q in enumerate(cols) if 0 <= q < wc]
    if ri and ci:
        sub = dy[:, ri][:, :, ci]
        canvas[:, torch.tensor([rows[t] for t in ri])[:, None], torch.tensor([cols[t] for t in ci])[None, :]] = sub
    return canvas, torch.tensor(rv)[:, None] & torch.tensor(cv)[None, :]


class ProcessingUnit:
    """The reconfigurable PU of :class:`Arch`. Values in the tensors' dtype (FP32 or FP64)."""

    def __init__(self, arch: Arch, order: str = "snake"):
        self.arch = arch
        self.order = check_order(order)

    # ---------------------------------------------------------------- convolution
    def _check_conv(self, w, groups):
        if groups != 1:
            raise UnsupportedLayerError(f"the TinyCL PU models groups=1 convolutions only, got groups={groups}")
        if w.dim() != 4:
            raise TinyclError(f"conv weight must be Cout x Cin x Kh x Kw, got shape {tuple(w.shape)}")

    def _kernel_traffic(self, pc, words, positions, mem, write=False):
        """Kernels / accumulators: once per pass if they fit the register file, else every position."""
        n = words if self.arch.fits_registers(words) else words * positions
        pc.read(mem, n) if not write else pc.write(mem, n)

    def conv_forward(self, x, w, b=None, stride=1, padding=0, groups=1, layer="conv"):
        """``y = conv(x, w) + b`` for one sample ``x`` (Cin x H x W). Returns (y, PassCount)."""
        self._check_conv(w, groups)
        (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
        cout, cin, kh, kw = w.shape
        canvas, mask, ho, wo = _forward_canvas(x, kh, kw, sh, sw, ph, pw)
        pc = PassCount(layer, "conv_fwd", self.order)
        self._kernel_traffic(pc, w.numel(), ho * wo, "weights")
        if b is not None:
            pc.read("weights", cout)
        wm = w.reshape(cout, -1)
        y = x.new_zeros(cout, ho, wo)
        for i, j, reg in _walk(self.order, canvas, mask, ho, wo, kh, kw, sh, sw, pc, "activations"):
            y[:, i, j] = wm @ reg.reshape(-1)
        if b is not None:
            y += b.view(-1, 1, 1)
        pc.write("activations", y.numel())
        pc.macs = cout * (pc.reg_reads + pc.reads["activations"])
        pc.ops = y.numel() if b is not None else 0
        pc.compute_cycles = ho * wo * window_cycles(self.arch, cin * cout, kh * kw)
        return y, pc

    def conv_backward_input(self, dy, w, x_shape, stride=1, padding=0, groups=1, layer="conv"):
        """``dL/dx`` (Cin x H x W) of one sample as a transposed conv. Returns (dx, PassCount)."""
        self._check_conv(w, groups)
        (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
        cout, cin, kh, kw = w.shape
        h, wd = x_shape[-2:]
        canvas, mask = _dx_canvas(dy, h, wd, kh, kw, sh, sw, ph, pw)
        pc = PassCount(layer, "conv_dx", self.order)
        self._kernel_traffic(pc, w.numel(), h * wd, "weights")
        wt = w.transpose(0, 1).flip(-1, -2).reshape(cin, -1)   # Cin x (Cout*Kh*Kw)
        dx = dy.new_zeros(cin, h, wd)
        for i, j, reg in _walk(self.order, canvas, mask, h, wd, kh, kw, 1, 1, pc, "gradients"):
            dx[:, i, j] = wt @ reg.reshape(-1)
        pc.write("gradients", dx.numel())
        pc.macs = cin * (pc.reg_reads + pc.reads["gradients"])   # zeros gated: only real products
        pc.compute_cycles = h * wd * window_cycles(self.arch, cin * cout, kh * kw)
        return dx, pc

    def conv_backward_weight(self, dy, x, w_shape, stride=1, padding=0, groups=1, bias=True, layer="conv"):
        """``(dW, db)`` of one sample; db is None without bias. Returns ((dW, db), PassCount)."""
        (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
        cout, cin, kh, kw = w_shape
        if groups != 1:
            raise UnsupportedLayerError(f"the TinyCL PU models groups=1 convolutions only, got groups={groups}")
        canvas, mask, ho, wo = _forward_canvas(x, kh, kw, sh, sw, ph, pw)
        pc = PassCount(layer, "conv_dw", self.order)
        words = cout * cin * kh * kw + (cout if bias else 0)
        dw = x.new_zeros(cout, cin * kh * kw)
        db = x.new_zeros(cout) if bias else None
        for i, j, reg in _walk(self.order, canvas, mask, ho, wo, kh, kw, sh, sw, pc, "activations"):
            g = dy[:, i, j]
            pc.read("gradients", cout)
            dw += g[:, None] * reg.reshape(1, -1)
            if bias:
                db += g
        if not self.arch.fits_registers(words):      # accumulate in gradient memory
            pc.read("gradients", words * (ho * wo - 1))
            pc.write("gradients", words * (ho * wo - 1))
        pc.write("gradients", words)
        pc.macs = cout * (pc.reg_reads + pc.reads["activations"])
        pc.ops = cout * ho * wo if bias else 0
        pc.compute_cycles = ho * wo * window_cycles(self.arch, cin * cout, kh * kw)
        return (dw.reshape(w_shape), db), pc

    # ---------------------------------------------------------------- dense
    def dense_forward(self, x, w, b=None, layer="fc"):
        """``y = W x + b`` for one sample (x: Fin). One M-input dot product per output chunk."""
        fout, fin = w.shape
        pc = PassCount(layer, "dense_fwd")
        x_in_regs = self.arch.fits_registers(fin)
        if x_in_regs:
            pc.read("activations", fin)
        y = x.new_zeros(fout)
        for o in range(fout):
            pc.read("weights", fin)
            if not x_in_regs:
                pc.read("activations", fin)
            y[o] = w[o] @ x
            pc.compute_cycles += dot_cycles(self.arch, fin)
        if b is not None:
            pc.read("weights", fout)
            y = y + b
        pc.write("activations", fout)
        pc.macs, pc.ops = fout * fin, (fout if b is not None else 0)
        return y, pc

    def dense_backward_input(self, dy, w, layer="fc"):
        """``dx = Wᵀ dy`` (Fin): one dot product of length Fout per input."""
        fout, fin = w.shape
        pc = PassCount(layer, "dense_dx")
        dy_in_regs = self.arch.fits_registers(fout)
        if dy_in_regs:
            pc.read("gradients", fout)
        dx = dy.new_zeros(fin)
        for i in range(fin):
            pc.read("weights", fout)
            if not dy_in_regs:
                pc.read("gradients", fout)
            dx[i] = w[:, i] @ dy
            pc.compute_cycles += dot_cycles(self.arch, fout)
        pc.write("gradients", fin)
        pc.macs = fout * fin
        return dx, pc

    def dense_backward_weight(self, dy, x, bias=True, layer="fc"):
        """``dW = dy xᵀ``, ``db = dy``: an outer product, M products per cycle."""
        fout, fin = dy.shape[0], x.shape[0]
        pc = PassCount(layer, "dense_dw")
        if not self.arch.fits_registers(fout):
            raise TinyclError(f"dense layer {layer!r}: {fout} outputs do not fit the register file "
                              f"({self.arch.register_file_words} words)")
        pc.read("gradients", fout)
        dw = dy.new_zeros(fout, fin)
        for i in range(fin):
            pc.read("activations", 1)
            dw[:, i] = dy * x[i]
        pc.write("gradients", fout * fin + (fout if bias else 0))
        pc.macs = fout * fin
        pc.compute_cycles = math.ceil(fout * fin / self.arch.mac_units)
        return (dw, dy.clone() if bias else None), pc

    # ---------------------------------------------------------------- elementwise, loss, update
    def relu_forward(self, y, layer="relu"):
        """Fused into the producer's output write: only the comparisons cost (ops)."""
        pc = PassCount(layer, "relu_fwd")
        pc.ops = y.numel()
        pc.compute_cycles = math.ceil(y.numel() / self.arch.mac_units)
        return torch.relu(y), pc

    def relu_backward(self, dy, y, layer="relu"):
        """``dx = dy * (y > 0)``: read dy and y, write dx."""
        pc = PassCount(layer, "relu_bwd")
        pc.read("gradients", dy.numel())
        pc.read("activations", y.numel())
        pc.write("gradients", dy.numel())
        pc.ops = dy.numel()
        pc.compute_cycles = math.ceil(dy.numel() / self.arch.mac_units)
        return dy * (y > 0).to(dy.dtype), pc

    def loss(self, logits, label: int, layer="loss"):
        """Softmax cross-entropy of one sample. Returns ((loss, dlogits), PassCount)."""
        n = logits.numel()
        z = logits - logits.max()
        e = torch.exp(z)
        p = e / e.sum()
        loss = -(z[label] - torch.log(e.sum()))
        g = p.clone()
        g[label] -= 1.0
        pc = PassCount(layer, "loss")
        pc.read("activations", n)
        pc.write("gradients", n)
        pc.ops = 4 * n
        pc.extra_cycles = self.arch.loss_cycles_per_class * n
        return (float(loss), g), pc

    def sgd_update(self, params: dict, grads: dict, lr: float, layer="update"):
        """``w -= lr * g`` on every parameter: read w and g, write w (one MAC each)."""
        pc = PassCount(layer, "update")
        out = {}
        for k, p in params.items():
            out[k] = p - lr * grads[k]
            pc.read("weights", p.numel())
            pc.read("gradients", p.numel())
            pc.write("weights", p.numel())
            pc.macs += p.numel()
        pc.compute_cycles = math.ceil(pc.macs / self.arch.mac_units)
        return out, pc
