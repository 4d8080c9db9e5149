"""Data-parallel training over several processes (torchrun / DistributedDataParallel).

Everything here is a no-op in a single process, so the training loop reads the same either way:

- a batch is the *global* batch (``TrainConfig.batch_size``); each rank takes its contiguous
  share of it (:func:`shard`), so a run continues with the same data stream whatever the number
  of ranks, and a killed job can resume with another world size, one process included;
- the cohesion and coupling losses see the global batch: :func:`gather_masks` all-gathers masks
  (with gradients, as contrastive-learning code does) and labels;
- only rank 0 touches the run directory (:func:`on_main` runs a step there and hands its result,
  or its error, to every rank, so no rank hangs at the next collective when rank 0 refuses).
"""

import json
import os

import torch
import torch.distributed as dist

from mwt.devices import resolve_device
from mwt.errors import MwtError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device=None) -> torch.device | None:
    """Join the process group that torchrun describes in the environment (once), and return the
    device this rank trains on: ``cuda:LOCAL_RANK`` when CUDA is asked for or present, else the
    CPU. Without a launcher, returns ``device`` untouched."""
    if device is not None:
        device = resolve_device(device)  # a device this torch cannot run is refused here too
    if not launched_by_torchrun():
        return device
    if not dist.is_available():
        raise MwtError("this PyTorch build has no torch.distributed; run a single process")
    wants_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if device is not None and device.type not in ("cpu", "cuda"):
        raise MwtError(f"under torchrun mwt runs on cuda (nccl) or the cpu (gloo), not {device}")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise MwtError(f"rank {local} of this node has no CUDA GPU; start fewer processes "
                           "per node or pass --device cpu")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo")
    return torch.device("cuda", local) if wants_cuda else torch.device("cpu")


def shutdown(wait: bool = False) -> None:
    """Leave the process group, if this process joined one. ``wait``: after a successful
    command, wait for every rank first; a rank that tears gloo down while a peer is still
    working can abort at exit ("terminate called without an active exception", seen once in
    the 2-rank tests). Not after an error, where a peer may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (of indices or samples)."""
    if not is_distributed():
        return batch
    return batch.tensor_split(world_size())[rank()]


def local_weight(local: int, total: int) -> float:
    """Factor on a rank's mean loss so that DDP's gradient average is the global batch mean,
    even when the global batch does not split evenly."""
    return world_size() * local / total if is_distributed() else 1.0


def _padded_gather(t: torch.Tensor, sizes: list[int], differentiable: bool) -> torch.Tensor:
    longest = max(sizes)
    if t.shape[0] < longest:
        pad = t.new_zeros((longest - t.shape[0], *t.shape[1:]))
        t = torch.cat([t, pad])
    if differentiable:
        from torch.distributed.nn.functional import all_gather
        parts = all_gather(t)
    else:
        parts = [torch.empty_like(t) for _ in sizes]
        dist.all_gather(parts, t)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def _sizes(rows: int, device) -> list[int]:
    n = torch.tensor([rows], device=device)
    counts = [torch.empty_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    return [int(c) for c in counts]


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``t`` (no gradient), concatenated in rank order."""
    if not is_distributed():
        return t
    device = comm_device()
    return _padded_gather(t.to(device), _sizes(t.shape[0], device), differentiable=False)


def gather_masks(masks: list[torch.Tensor], labels: torch.Tensor):
    """Every rank's masks (with gradients back to their own rank) and labels, in rank order.

    The backward of the gather sums every rank's gradient into the owner's masks; since every
    rank computes the same global loss and DDP averages over ranks, the result is the gradient
    of the global-batch loss.
    """
    if not is_distributed():
        return masks, labels
    sizes = _sizes(labels.shape[0], labels.device)
    widths = [m.shape[1] for m in masks]
    flat = _padded_gather(torch.cat(masks, dim=1), sizes, differentiable=True)
    return list(flat.split(widths, dim=1)), _padded_gather(labels, sizes, differentiable=False)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t)
    return t


def broadcast_json(obj=None):
    """Rank 0's JSON-serialisable ``obj`` on every rank (no pickle on the wire)."""
    if not is_distributed():
        return obj
    device = comm_device()
    data = json.dumps(obj).encode() if is_main() else b""
    size = torch.tensor([len(data)], device=device)
    dist.broadcast(size, 0)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if is_main()
           else torch.empty(int(size), dtype=torch.uint8, device=device))
    dist.broadcast(buf, 0)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def on_main(fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only and return its (JSON-serialisable) result on every rank; an
    ``MwtError`` there is raised on every rank, any other error on rank 0 stops the others with
    a one-line error too."""
    if not is_distributed():
        return fn(*args, **kwargs)
    outcome, error = None, None
    if is_main():
        try:
            outcome = {"ok": fn(*args, **kwargs)}
        except MwtError as exc:
            error, outcome = exc, {"error": str(exc)}
        except BaseException as exc:
            error, outcome = exc, {"error": f"rank 0 failed ({type(exc).__name__}: {exc})"}
    outcome = broadcast_json(outcome)
    if error is not None:
        raise error
    if "error" in outcome:
        raise MwtError(outcome["error"])
    return outcome["ok"]


def broadcast_training_state(model: torch.nn.Module, optimizer) -> None:
    """Rank 0's weights, buffers and optimizer momentum on every rank (after rank 0 resumed)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state[p]
                has = torch.tensor([int("momentum_buffer" in state
                                        and state["momentum_buffer"] is not None)],
                                   device=p.device)
                dist.broadcast(has, 0)
                if int(has):
                    if "momentum_buffer" not in state or state["momentum_buffer"] is None:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    dist.broadcast(state["momentum_buffer"], 0)


def comm_device() -> torch.device:
    return (torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl" else torch.device("cpu"))


__all__ = ["is_distributed", "rank", "world_size", "is_main", "init_from_env", "shard",
           "gather_masks", "gather_rows", "all_reduce_sum", "broadcast_json", "on_main",
           "broadcast_training_state", "local_weight", "launched_by_torchrun", "shutdown",
           "comm_device"]
