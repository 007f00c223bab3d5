"""Process-group setup for the three ways the trainer is launched.

Design choices
* ``deepspeed --num_gpus N -m xprompt.train ...`` and ``torchrun --nproc_per_node N -m xprompt.train ...``
  set RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT themselves; a plain ``python`` or
  ``xprompt train model`` process sets none of them, so ``setup_env`` fills single-process defaults and picks a
  free TCP port (DeepSpeed always initialises a process group, even for one process).
* Backend: gloo on CPU (DeepSpeed's CPU accelerator would otherwise look for oneCCL), nccl on CUDA.
* DeepSpeed JIT-builds a shared-memory comm op on CPU the first time (~1 min); ``TORCH_EXTENSIONS_DIR``
  defaults to ``<repo>/.cache/torch_extensions`` (as the Makefile sets it) so the build is paid once.
* Threads: 2 processes on 2 cores must not each start 2 compute threads; by default each process gets
  ``cores // local processes`` threads.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from xprompt.paths import REPO_ROOT


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    launched: bool  # True when a launcher (deepspeed / torchrun) set the environment

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_env(local_rank_arg: int | None = None) -> DistInfo:
    """Make the environment complete for ``torch.distributed`` (single-process defaults when not launched)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # skips DeepSpeed's "unable to detect" warning
        _quiet_cpu_build_noise()
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if not launched:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(free_port())
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        if "LOCAL_RANK" not in os.environ:
            os.environ["LOCAL_RANK"] = str(local_rank_arg if local_rank_arg is not None else 0)
    world = int(os.environ["WORLD_SIZE"])
    return DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=world,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        launched=launched,
    )


def _quiet_cpu_build_noise() -> None:
    """On a CPU machine, DeepSpeed's op builder imports ``torch.utils.cpp_extension``, which logs "No CUDA
    runtime is found" (expected here: the op is built for the CPU) and setuptools' distutils deprecation
    warning; neither says anything to act on, so they are not shown (``note_extension_build`` says what runs)."""
    import logging
    import warnings

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")


def note_extension_build() -> None:
    """Say what the first run on a machine waits for: DeepSpeed JIT-compiles its CPU shared-memory op into
    ``TORCH_EXTENSIONS_DIR`` once (tens of seconds; later runs load it)."""
    import sys

    if device_type() != "cpu":
        return
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", REPO_ROOT / ".cache" / "torch_extensions"))
    if any(root.glob("deepspeed_shm_comm*/*.so")):
        return
    print(
        f"xprompt: first run here: DeepSpeed compiles its CPU communication op into {root} "
        "(about 20-60 s, once; later runs reuse it)",
        file=sys.stderr,
    )


def device_type() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def init_process_group(info: DistInfo):
    """Initialise DeepSpeed's process group; returns the torch device of this process."""
    import deepspeed
    import torch

    dev = device_type()
    if dev == "cuda":
        torch.cuda.set_device(info.local_rank)
    deepspeed.init_distributed(
        dist_backend="gloo" if dev == "cpu" else "nccl", auto_mpi_discovery=False, verbose=False
    )
    return torch.device(dev, info.local_rank) if dev == "cuda" else torch.device("cpu")


def set_threads(info: DistInfo, num_threads: int = 0) -> int:
    import torch

    if num_threads <= 0:
        num_threads = max(1, (os.cpu_count() or 1) // max(1, info.local_world_size))
    torch.set_num_threads(num_threads)
    return num_threads


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few Python floats over all processes (a float64 tensor all-reduce; identity for one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [float(v) for v in values]
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, src: int = 0):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
