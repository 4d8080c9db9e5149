"""Training-time fusion of each gate's mask into its BatchNorm (issue 8's "near-free" gates).

A modular model computes ``m * BN(x) = m * (g * (x - mean) * invstd + b)`` with ``m`` the gate's
per-sample, per-channel mask: as written, that is BatchNorm's passes over the feature map plus
one more for the mask, and three in the backward (the mask's gradient, the scaled gradient, then
BatchNorm's own). It is one per-sample affine map, ``x * scale[b, c] + shift[b, c]``, so
:class:`GatedBatchNorm` computes it in one pass after the batch statistics, and its backward in
two, with no BatchNorm output kept for the backward.

:func:`fuse_gates` (and :func:`training_view`, which can also make BatchNorm synchronous over
ranks) returns a *view* of a modular model whose graph calls the fused op where the
model has ``apply_mask(bn(conv(x)), mask)``. The view shares every parameter and buffer with the
model (training the view trains the model; save the model, not the view), so the modular graph
that extraction and the files see never changes. BatchNorms that are not a plain affine
``nn.BatchNorm2d`` in float32 or float64 (SyncBatchNorm, half precision) keep the unfused path.
"""

import torch
import torch.fx as fx
import torch.nn as nn

from mwt.gates import apply_mask, gate_application, is_modular, trace

_FUSED_DTYPES = (torch.float32, torch.float64)


class _GatedBatchNormFn(torch.autograd.Function):
    """``mask * batch_norm(x)`` for [B, C, H, W] ``x`` and [B, C] ``mask``; stats given."""

    @staticmethod
    def forward(ctx, x, mask, weight, bias, mean, invstd, batch_stats: bool):
        g_inv = weight * invstd
        scale = mask * g_inv
        shift = mask * (bias - mean * g_inv)
        ctx.save_for_backward(x, mask, weight, bias, mean, invstd)
        ctx.batch_stats = batch_stats
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])

    @staticmethod
    def backward(ctx, grad):
        x, mask, weight, bias, mean, invstd = ctx.saved_tensors
        b, c = mask.shape
        # Per (sample, channel) sums of the gradient and of gradient * xhat; xhat itself is
        # never built: sum(grad * (x - mean)) * invstd.
        s1 = grad.sum(dim=(2, 3))
        gx = torch.bmm(grad.reshape(b * c, 1, -1), x.reshape(b * c, -1, 1)).view(b, c)
        s2 = (gx - mean * s1) * invstd
        grad_mask = weight * s2 + bias * s1
        t1 = (mask * s1).sum(0)  # = grad of bias
        t2 = (mask * s2).sum(0)  # = grad of weight
        g_inv = weight * invstd
        grad_x = None
        if ctx.needs_input_grad[0]:
            if ctx.batch_stats:
                n = x.numel() // c
                # dx = invstd * g * (m * grad - t1 / n - xhat * t2 / n), as x * B + C + grad * A
                coef_x = -g_inv * invstd * t2 / n
                const = -g_inv * t1 / n - mean * coef_x
                grad_x = torch.addcmul(const[None, :, None, None], x, coef_x[None, :, None, None])
                grad_x.addcmul_(grad, (mask * g_inv)[:, :, None, None])
            else:
                grad_x = grad * (mask * g_inv)[:, :, None, None]
        return grad_x, grad_mask, t2, t1, None, None, None


def fusable(bn: nn.Module) -> bool:
    """Whether ``bn`` is a BatchNorm the fused op reproduces exactly (plain, affine)."""
    return type(bn) is nn.BatchNorm2d and bn.affine


# Above this E[x^2] / var in any channel (|mean| > sqrt(3) std), the one-pass variance loses
# more than ~1e-5 of its value to float32 cancellation, and it is computed again, shifted.
_ONE_PASS_CONDITION = 4.0


@torch.no_grad()  # their dependence on x is in the fused op's own backward
def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of [B, C, H, W] ``x``.

    One pass first: sums and sums of squares per (sample, channel), added over samples in
    float64; several times faster on the CPU than ``torch.var_mean`` over (0, 2, 3). Its
    E[x^2] - E[x]^2 cancels in float32 where a channel's mean is large against its spread
    (drifting 1e-3 from ``nn.BatchNorm2d`` at mean = 100 std), so when any channel's
    E[x^2] / var passes ``_ONE_PASS_CONDITION`` the variance is computed again from
    ``x - mean``, whose mean is about 0: a second pass over ``x``, paid only for such inputs.
    That test reads a value on the host, free on the CPU but a sync per layer on an
    accelerator, where ``torch.var_mean`` (Welford, stable) is fast and is used instead.
    """
    if x.device.type != "cpu":
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        return mean, var
    c = x.shape[1]
    n = x.numel() // c
    mean, squares = _sums(x)
    mean = mean / n
    squares = squares / n
    var = (squares - mean * mean).clamp_min_(0)
    if bool((squares > _ONE_PASS_CONDITION * var).any()):
        shift = mean.to(x.dtype)
        centred_mean, centred_squares = _sums(x - shift[None, :, None, None])
        centred_mean = centred_mean / n
        var = (centred_squares / n - centred_mean * centred_mean).clamp_min_(0)
        mean = centred_mean + shift.double()
    return mean.to(x.dtype), var.to(x.dtype)


def _sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sums of x and x^2 in float64, from float32 per-(sample, channel) sums."""
    b, c = x.shape[:2]
    flat = x.reshape(b * c, 1, -1)
    sums = x.sum(dim=(2, 3)).sum(0, dtype=torch.float64)  # (a dtype= on the first sum would
    # copy all of x to float64 first)
    squares = torch.bmm(flat, flat.transpose(1, 2)).view(b, c).sum(0, dtype=torch.float64)
    return sums, squares


class GatedBatchNorm(nn.Module):
    """``apply_mask(bn(x), mask)`` in one fused op; ``bn`` is shared, not copied.

    Training mode updates ``bn``'s running statistics exactly as ``nn.BatchNorm2d`` does
    (momentum or cumulative average, unbiased variance, ``num_batches_tracked``).
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if x.dtype not in _FUSED_DTYPES or mask.dtype != x.dtype or bn.weight.dtype != x.dtype:
            return apply_mask(bn(x), mask)  # e.g. under autocast: BatchNorm's own dtype rules
        batch_stats = bn.training or bn.running_mean is None
        if batch_stats:
            mean, var = _batch_stats(x)
            if bn.training and bn.track_running_stats and bn.running_mean is not None:
                self._update_running_stats(mean, var, x.numel() // x.shape[1])
        else:
            mean, var = bn.running_mean, bn.running_var
        invstd = torch.rsqrt(var + bn.eps)
        return _GatedBatchNormFn.apply(x, mask, bn.weight, bn.bias, mean, invstd, batch_stats)

    @torch.no_grad()
    def _update_running_stats(self, mean, var, n: int) -> None:
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                  else bn.momentum)
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)


def fuse_gates(model: nn.Module) -> nn.Module:
    """A view of a modular ``model`` that computes the same function with each gate's mask fused
    into its BatchNorm; parameters and buffers are the model's own (see the module docstring).
    A standard model is returned as it is."""
    return training_view(model)


def training_view(model: nn.Module, *, fuse: bool = True, sync_bn: bool = False) -> nn.Module:
    """The graph ``mwt.train`` runs: ``model``'s own, sharing its parameters and buffers, with
    gates fused into their BatchNorms (``fuse``, modular models) and, with ``sync_bn``, every
    BatchNorm2d computing its statistics over all ranks (``nn.SyncBatchNorm``; not fused).
    Returns ``model`` itself when there is nothing to change."""
    fuse = fuse and not sync_bn and is_modular(model)
    if not fuse and not sync_bn:
        return model
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    modules = dict(gm.named_modules())
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    owners: dict[str, nn.Module] = {}
    for node in gm.graph.nodes:
        parts = gate_application(node) if fuse else None
        bn_node = parts[0] if parts else None
        if (parts and bn_node.op == "call_module" and fusable(modules[bn_node.target])
                and len(bn_node.users) == 1):
            name = f"{bn_node.target.replace('.', '_')}_fused_gate"
            owners[name] = GatedBatchNorm(modules[bn_node.target])
            env[node] = graph.call_module(name, (env[bn_node.args[0]], env[parts[1]]))
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    for node in list(graph.nodes):  # BN calls whose only user was fused away
        if (node.op == "call_module" and not node.users and node.target in modules
                and isinstance(modules[node.target], nn.BatchNorm2d)):
            graph.erase_node(node)
    targets = {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
    root = {t: owners[t] if t in owners else _attr(gm, t) for t in targets}
    if sync_bn:
        root = {t: nn.SyncBatchNorm.convert_sync_batchnorm(m)
                if isinstance(m, nn.BatchNorm2d) else m for t, m in root.items()}
    view = fx.GraphModule(root, graph, class_name=f"Training{type(model).__name__}")
    view.train(model.training)
    return view


def _attr(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = ["GatedBatchNorm", "fuse_gates", "fusable", "training_view"]
