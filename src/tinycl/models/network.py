"""The network: a captured graph of layers, a training step, state export.

``Network`` is what :func:`tinycl.models.from_torch` returns. No autograd is used:
``forward`` keeps what each layer's backward needs, ``backward`` walks the graph in
reverse calling each op's input-gradient and weight-gradient steps.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError
from ..kernels import loss as LOSS
from ..kernels.allocator import keep_freed_memory
from ..numerics.lossscale import make_scaler
from ..numerics.precision import Precision, get_precision
from .layers import Ctx, Layer


class Network:
    """A trainable network: ``forward``, ``backward``, ``named_grads``, ``step``, state export.

    ``impl`` picks the conv implementation ("aten" fast path or "im2col" device algorithm).
    """

    def __init__(self, root: Layer, input_shape: tuple, precision: str | Precision = "fp32", impl: str = "aten",
                 channels_last: bool | None = None):
        self.root = root
        keep_freed_memory()  # no page faults on each step's fresh activations and gradients
        # NHWC activations and weights: oneDNN's preferred layout (about 1.3x faster convs on x86);
        # the values are the same, only the memory order differs
        # (default: when some conv has >= 16 input channels; a 3-channel stem alone runs faster in NCHW)
        if channels_last is None:
            wide = any(layer.kind == "conv2d" and layer.params["weight"].value.shape[1] * layer.groups >= 16
                       for layer in root.layers())
            channels_last = impl == "aten" and len(input_shape) == 3 and wide
        self.channels_last = channels_last
        self.input_shape = tuple(input_shape)
        self.precision = get_precision(precision)
        self.impl = impl
        self.training = True
        self.generator: torch.Generator | None = None
        self.scaler = make_scaler(self.precision.loss_scale)
        self.frozen: set[str] = set()
        self._layout_params()

    def _layout_params(self) -> None:
        if self.channels_last:
            for _, p in self.root.named_params():
                if p.value.dim() == 4:
                    p.set(p.value.contiguous(memory_format=torch.channels_last))

    # -- mode ---------------------------------------------------------------------------
    def train(self) -> "Network":
        self.training = True
        return self

    def eval(self) -> "Network":
        self.training = False
        return self

    def _ctx(self) -> Ctx:
        return Ctx(self.precision, self.training, self.impl, self.generator)

    # -- passes -------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise TinyclError(f"input has shape {tuple(x.shape)}; the network expects (N, "
                              f"{', '.join(map(str, self.input_shape))})")
        if not torch.isfinite(x).all():
            raise TinyclError("input contains NaN or infinite values")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output logits; in training mode, keeps what ``backward`` needs."""
        self.check_input(x)
        ctx = self._ctx()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.root.forward(ctx.act(x), ctx)

    def backward(self, grad_output: torch.Tensor, need_input: bool = True) -> torch.Tensor | None:
        """Propagate ``dL/dy``; fills parameter grads and returns ``dL/dx`` (None if not needed)."""
        if not self.training:
            raise TinyclError("backward() needs a forward pass in training mode (call net.train())")
        ctx = self._ctx()
        return self.root.backward(ctx.grad(grad_output), ctx, need_input)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Logits in evaluation mode, in chunks of ``batch_size`` samples."""
        was, self.training = self.training, False
        try:
            return torch.cat([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        finally:
            self.training = was

    # -- parameters ---------------------------------------------------------------------
    def named_params(self):
        return dict(self.root.named_params())

    def named_parameters(self) -> dict[str, torch.Tensor]:
        return {k: p.value for k, p in self.root.named_params()}

    def named_grads(self) -> dict[str, torch.Tensor]:
        """Parameter gradients keyed exactly as ``module.named_parameters()`` (unscaled)."""
        s = self.scaler.scale if self.scaler else 1.0
        return {k: (p.grad / s if s != 1.0 else p.grad) for k, p in self._params() if p.grad is not None}

    def zero_grad(self) -> None:
        for _, p in self._params():
            p.grad = None

    def step(self, optimizer) -> bool:
        """Apply ``optimizer`` to every non-frozen parameter; returns False if skipped (overflow)."""
        grads = self.named_grads()
        if self.scaler is not None:
            overflow = any(not torch.isfinite(g).all() for g in grads.values())
            if not self.scaler.update(overflow):
                self.zero_grad()
                return False
        todo = [(n, p) for n, p in self._params() if n not in self.frozen and n in grads]
        if todo:
            names = [n for n, _ in todo]
            new = optimizer.step(names, [p.value for _, p in todo], [grads[n] for n in names])
            for (_, p), v in zip(todo, new):
                p.set(self.precision.store_weight(v, self.generator))
        self.zero_grad()
        return True

    def _params(self) -> list:
        """The (name, Param) list, walked once: the layer tree does not change."""
        if getattr(self, "_param_list", None) is None:
            self._param_list = list(self.root.named_params())
        return self._param_list

    def train_step(self, x, y, optimizer, loss: str = "ce") -> float:
        """One step: forward, loss, backward, update. Returns the loss (float)."""
        self.train()
        out = self.forward(x)
        if loss == "ce":
            value, probs = LOSS.cross_entropy_forward(out, y)
            g = LOSS.cross_entropy_backward(probs, y)
        elif loss == "mse":
            value, g = LOSS.mse_forward(out, y), LOSS.mse_backward(out, y)
        else:
            raise TinyclError(f"unknown loss {loss!r}; allowed: ce, mse")
        if self.scaler is not None:
            g = g * self.scaler.scale
        self.backward(g, need_input=False)
        self.step(optimizer)
        return float(value)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers under the torch module's names (``load_state_dict``-ready)."""
        sd = {k: p.value.detach().clone(memory_format=torch.contiguous_format) for k, p in self.root.named_params()}
        sd.update({k: b.clone() for k, b in self.root.named_buffers()})
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params, buffers = dict(self.root.named_params()), dict(self.root.named_buffers())
        missing = (set(params) | set(buffers)) - set(sd)
        if missing:
            raise TinyclError(f"state is missing {sorted(missing)[:3]}")
        for k, p in params.items():
            p.set(sd[k].clone().to(p.value.dtype))
        for k, b in buffers.items():
            b.copy_(sd[k])
        self._layout_params()

    def export_to(self, module: torch.nn.Module) -> torch.nn.Module:
        """Copy the trained weights and buffers back into ``module`` (strict)."""
        module.load_state_dict(self.state_dict(), strict=True)
        return module

    def layers(self) -> list[Layer]:
        return list(self.root.layers())
