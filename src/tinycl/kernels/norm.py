"""BatchNorm2d: batch statistics in training, running statistics when frozen.

Two implementations of the same steps: the explicit formulas below (the reference,
readable in a screenful), and ``batchnorm_train_aten`` / ``batchnorm_backward_aten``,
which call PyTorch's fused native kernels directly (no autograd) for speed.

Statistics are computed in the tensor's dtype (FP32 in the low-precision policies;
the network rounds inputs and outputs). Running stats follow torch: unbiased
variance, ``running = (1 - momentum) * running + momentum * batch``.
"""

from __future__ import annotations

import torch


def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    """Returns ``(y, cache)`` with ``cache = (xhat, inv_std, mean, var_biased)``."""
    mean = x.mean(dim=(0, 2, 3))
    xc = x - mean.view(1, -1, 1, 1)
    var = (xc * xc).mean(dim=(0, 2, 3))
    inv_std = torch.rsqrt(var + eps)
    xhat = xc * inv_std.view(1, -1, 1, 1)
    y = xhat * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    return y, (xhat, inv_std, mean, var)


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Frozen statistics: an affine map per channel. Returns ``(y, inv_std)``."""
    inv_std = torch.rsqrt(running_var + eps)
    scale = gamma * inv_std
    shift = beta - running_mean * scale
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), inv_std


def batchnorm_update_running(running_mean, running_var, mean, var_biased, count, momentum=0.1):
    """In-place running-stat update with the unbiased variance (count = N*H*W)."""
    unbiased = var_biased * (count / max(count - 1, 1))
    running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def batchnorm_backward_train(dy, gamma, cache):
    """``(dx, dgamma, dbeta)`` through batch statistics.

    dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), means over N, H, W.
    """
    xhat, inv_std, _, _ = cache
    dbeta = dy.sum(dim=(0, 2, 3))
    dgamma = (dy * xhat).sum(dim=(0, 2, 3))
    m = dy.numel() // dy.shape[1]
    k = (gamma * inv_std).view(1, -1, 1, 1)
    dx = k * (dy - (dbeta / m).view(1, -1, 1, 1) - xhat * (dgamma / m).view(1, -1, 1, 1))
    return dx, dgamma, dbeta


def batchnorm_backward_eval(dy, x, gamma, running_mean, inv_std):
    """Gradients through frozen statistics: ``(dx, dgamma, dbeta)``."""
    dx = dy * (gamma * inv_std).view(1, -1, 1, 1)
    xhat = (x - running_mean.view(1, -1, 1, 1)) * inv_std.view(1, -1, 1, 1)
    return dx, (dy * xhat).sum(dim=(0, 2, 3)), dy.sum(dim=(0, 2, 3))


def batchnorm_ops(numel: int, channels: int) -> dict[str, int]:
    """Approximate operation counts (elementwise, not MACs): 4/elem forward, 6/elem backward."""
    return {"forward": 4 * numel, "backward_input": 6 * numel, "backward_weight": 2 * numel,
            "update": 2 * channels}


def batchnorm_train_aten(x, gamma, beta, running_mean, running_var, eps=1e-5, momentum=0.1):
    """Fused forward with batch statistics; updates the running stats in place.

    Returns ``(y, cache)``; ``cache = (x, mean, inv_std)`` feeds :func:`batchnorm_backward_aten`.
    """
    y, mean, inv_std = torch.ops.aten.native_batch_norm(x, gamma, beta, running_mean, running_var, True,
                                                        momentum, eps)
    return y, (x, mean, inv_std)


def batchnorm_backward_aten(dy, gamma, cache, eps=1e-5):
    """Fused backward through batch statistics: ``(dx, dgamma, dbeta)``."""
    x, mean, inv_std = cache
    return torch.ops.aten.native_batch_norm_backward(dy, x, gamma, None, None, mean, inv_std, True, eps,
                                                     [True, True, True])


def batchnorm_eval_aten(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Fused forward with running statistics (frozen BN). Returns ``y``."""
    return torch.ops.aten.native_batch_norm(x, gamma, beta, running_mean, running_var, False, 0.0, eps)[0]


def batchnorm_backward_eval_aten(dy, x, gamma, running_mean, running_var, eps=1e-5):
    """Fused backward through running statistics: ``(dx, dgamma, dbeta)``."""
    return torch.ops.aten.native_batch_norm_backward(dy, x, gamma, running_mean, running_var, None, None, False,
                                                     eps, [True, True, True])
