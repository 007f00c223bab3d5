"""Training config (``TrainConfig``) and the DeepSpeed config resolution.

Design choices
* One typed dataclass, loaded strictly with ``xprompt.config_io.config_from_dict`` (unknown keys are an
  error); it is the single source of truth for the batch geometry, learning rate, schedule, clipping and
  precision. ``ds_config.json`` holds engine settings only (ZeRO stage, communication tuning); every
  ``"auto"`` in it is filled from this config, and explicit numbers there must agree with it.
* Batch geometry: ``global_batch`` packed sequences (each up to ``max_len`` tokens) per optimizer step,
  ``micro_batch`` sequences per process per forward. Accumulation = global / (micro x world size) must be
  a whole number; the resolved DeepSpeed config records all three and is checked.
* Optimizer and schedule are the trainer's own (torch ``AdamW`` with betas (0.9, 0.95), cosine with linear
  warmup down to ``min_lr_ratio * lr``): a client ``torch.optim.AdamW`` avoids DeepSpeed's FusedAdam JIT
  build on CPU. A ds config that names its own "optimizer"/"scheduler" is rejected rather than half-honoured.
* Precision: ``bf16`` is mixed precision through DeepSpeed's ``torch_autocast`` section (fp32 master weights
  and optimizer state, bf16 matmuls), chosen by ``precision="auto"`` when the CPU has AVX512-BF16/AMX (or the
  GPU supports bf16); ``fp32`` otherwise. ``fp16`` is refused on CPU (no fp16 matmul kernels worth having and
  DeepSpeed refuses it there) and on GPU uses DeepSpeed's loss-scaled fp16 engine.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from xprompt.config_io import config_from_dict, load_config, load_json_object
from xprompt.errors import ConfigError
from xprompt.sequence import MODES

PRECISIONS = ("auto", "bf16", "fp32", "fp16")
SCHEDULES = ("cosine", "wsd")
EMBED_INITS = ("random", "vq")

# The engine settings shipped as ds_config.json at the repository root (a test keeps the two equal).
DEFAULT_DS_CONFIG: dict = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {
        "stage": 2,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": 50000000,
        "allgather_bucket_size": 50000000,
    },
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "torch_autocast": {"enabled": "auto", "dtype": "auto"},
    "steps_per_print": 1000000000,
    "wall_clock_breakdown": False,
}


@dataclass
class TrainConfig:
    # model
    preset: str = "tiny"
    model: dict = field(default_factory=dict)  # ModelConfig overrides on top of the preset
    mode: str = "xp"  # context mode the samples are laid out in: xp / full / none
    mode_mix: dict = field(
        default_factory=dict
    )  # {mode: weight}: training samples in mixed layouts (val: mode)
    # batch geometry
    max_len: int = 1024  # tokens per packed training sequence
    micro_batch: int = 4  # sequences per process per forward/backward
    global_batch: int = 16  # sequences per optimizer step, all processes and accumulation
    pack: bool = True  # False: one sample per sequence, padded (the ablation / benchmark baseline)
    pad_to_max_len: bool = False  # fixed (B, max_len) shapes instead of padding to the longest row
    doc_attention: bool = True  # attention per packed document (same result as the dense mask, cheaper)
    # optimisation
    steps: int = 1000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    z_loss: float = 0.0
    loss_on_examples: bool = (
        False  # also train on the in-context examples' outputs (validation: answers only)
    )
    schedule: str = (
        "cosine"  # "cosine" (warmup, cosine to min_lr_ratio) | "wsd" (warmup, constant, linear decay)
    )
    decay_steps: int = 0  # wsd: length of the final decay (0 = constant to the end: a leg to be continued)
    embed_init: str = (
        "random"  # "vq": image-code rows start from what each code looks like (train/code_init.py)
    )
    init_from: str = ""  # an exported model dir to start from (fresh optimizer: the next leg of a long run)
    max_minutes: float = 0.0  # stop cleanly (checkpoint + export) after this much wall time; 0 = no limit
    probe_samples: int = (
        0  # at each validation, the in-context probe on this many validation samples (0 = off)
    )
    grad_checkpointing: bool = False
    # torch.compile each block's per-token work (XPromptModel.compile_regions); attention stays eager
    compile: bool = False
    lora: dict = field(
        default_factory=dict
    )  # xprompt.lora.LoraSpec fields ({} = full fine-tuning), e.g. {"r": 16}
    precision: str = "auto"
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    save_every: int = 200
    keep_last: int = 3
    val_every: int = 200
    val_batches: int = 8  # micro-batches per validation pass (per process)
    val_fraction: float = 0.02  # held-out share of --data when no --val-data is given
    num_threads: int = 0  # torch threads per process; 0 = cores / local processes

    def __post_init__(self):
        if not isinstance(self.model, dict):
            raise TypeError(
                f"model must be an object of ModelConfig overrides, got {type(self.model).__name__}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; choose one of {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        for name in (
            "max_len",
            "micro_batch",
            "global_batch",
            "steps",
            "log_every",
            "save_every",
            "keep_last",
            "val_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_minutes >= 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        for name in ("warmup_steps", "val_batches", "num_threads", "probe_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch={self.global_batch} is not a multiple of micro_batch={self.micro_batch}"
            )
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1) or self.eps <= 0:
            raise ValueError("beta1/beta2 must be in [0, 1) and eps > 0")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.z_loss < 0:
            raise ValueError("weight_decay, grad_clip and z_loss must be >= 0")
        self._check_campaign_fields()
        self._check_lora()
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def _check_lora(self) -> None:
        if not self.lora:
            return
        from xprompt.lora import spec_from_dict

        spec_from_dict(self.lora)  # unknown keys / bad values fail at load time, not after data loading
        if self.compile:
            raise ValueError(
                "compile with lora is not supported (the adapters replace compiled layers and the export "
                "copies the model); set compile to false for a LoRA run"
            )

    def _check_campaign_fields(self) -> None:
        """Layouts, schedule and initialisation (issue 13's training campaign)."""
        bad = [m for m, w in self.mode_mix.items() if m not in MODES or not w >= 0]
        if bad or (self.mode_mix and not sum(self.mode_mix.values()) > 0):
            raise ValueError(
                f"mode_mix={self.mode_mix}: modes must be of {', '.join(MODES)} with weights >= 0, not all 0"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.embed_init not in EMBED_INITS:
            raise ValueError(f"embed_init={self.embed_init!r}; choose one of {', '.join(EMBED_INITS)}")
        if self.decay_steps < 0 or (
            self.schedule == "wsd" and self.decay_steps > self.steps - self.warmup_steps
        ):
            raise ValueError(f"decay_steps must be in [0, steps - warmup_steps], got {self.decay_steps}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for optimizer step ``step`` (0-based): linear warmup, then cosine decay, or
        (``wsd``) constant until the last ``decay_steps``, which decay linearly to ``min_lr_ratio``: a run of
        legs keeps one learning rate across legs and decays once, at the end."""
        import math

        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "wsd":
            into = step - (self.steps - self.decay_steps)  # steps into the decay phase
            if self.decay_steps == 0 or into < 0:
                return 1.0
            return 1.0 - (1 - self.min_lr_ratio) * min(1.0, (into + 1) / self.decay_steps)
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def load_train_config(path, overrides: dict | None = None) -> TrainConfig:
    cfg = load_config(TrainConfig, path)
    if overrides:
        from xprompt.config_io import config_to_dict

        data = config_to_dict(cfg)
        data.update(overrides)
        # the file itself loaded cleanly above, so whatever fails now is a --set value: say so
        sets = " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
        cfg = config_from_dict(TrainConfig, data, where=f"--set {sets} (on {path})")
    return cfg


# ---------------------------------------------------------------------- precision
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        try:
            import cpuinfo  # py-cpuinfo, a DeepSpeed dependency; slow, so only a fallback

            flags = set(cpuinfo.get_cpu_info().get("flags", []))
        except Exception:  # noqa: BLE001 (no flags readable: assume no bf16)
            return False
    else:
        flags = set()
        for line in text.splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto``/``bf16``/``fp32``/``fp16`` -> the precision actually used on ``device_type`` (cpu / cuda)."""
    import torch

    if precision == "fp16" and device_type == "cpu":
        raise ConfigError("precision fp16 is not supported on CPU; use bf16 (if the CPU has it) or fp32")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


# ---------------------------------------------------------------------- DeepSpeed config
def load_ds_config(path) -> dict:
    return load_json_object(path, "DeepSpeed config")


def _enabled(section, name: str, where: str):
    """``section["enabled"]`` as True/False/"auto" (a missing section counts as "auto")."""
    if section is None:
        return "auto"
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {name!r} must be an object")
    val = section.get("enabled", "auto")
    if val not in (True, False, "auto"):
        raise ConfigError(f'{where}: {name}.enabled must be true, false or "auto", got {val!r}')
    return val


def resolve_ds_config(
    ds: dict, cfg: TrainConfig, world_size: int, precision: str, where: str = "ds_config"
) -> dict:
    """Fill every "auto" of ``ds`` from ``cfg``; raise ``ConfigError`` on contradictions.

    ``precision`` is the resolved precision (``resolve_precision``). Returns a new dict that DeepSpeed can take.
    """
    ds = copy.deepcopy(ds)
    _resolve_batch(ds, cfg, world_size, where)
    _resolve_precision(ds, precision, where)
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if not isinstance(zero, dict) or zero.get("stage", 0) not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: zero_optimization.stage must be 0, 1, 2 or 3")
    left = _find_auto(ds)
    if left:
        raise ConfigError(f'{where}: cannot fill "auto" for {", ".join(left)}; give explicit values there')
    return ds


def _resolve_batch(ds: dict, cfg: TrainConfig, world_size: int, where: str) -> None:
    """Batch sizes, accumulation and clipping from the training config (in place); no optimizer/scheduler."""
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"{where}: remove the {key!r} section; the optimizer (AdamW) and the cosine schedule "
                "come from the training config (lr, warmup_steps, weight_decay ...)"
            )
    micro, glob = cfg.micro_batch, cfg.global_batch
    if glob % (micro * world_size):
        raise ConfigError(
            f"global_batch={glob} is not divisible by micro_batch={micro} x {world_size} process(es); "
            "change global_batch or micro_batch in the training config"
        )
    want = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": glob // (micro * world_size),
        "train_batch_size": glob,
    }
    for key, value in want.items():
        given = ds.get(key, "auto")
        if given != "auto" and given != value:
            raise ConfigError(
                f"{where}: {key}={given!r} contradicts the training config, which gives {value} "
                f"(micro_batch={micro}, global_batch={glob}, {world_size} process(es)); "
                'set it to "auto"'
            )
        ds[key] = value
    if (
        ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world_size
        != ds["train_batch_size"]
    ):
        raise ConfigError(
            f"{where}: micro-batch x accumulation x world size != train_batch_size"
        )  # defensive
    clip = ds.get("gradient_clipping", "auto")
    if clip == "auto":
        ds["gradient_clipping"] = cfg.grad_clip
    elif not isinstance(clip, (int, float)) or float(clip) != cfg.grad_clip:
        raise ConfigError(
            f"{where}: gradient_clipping={clip!r} contradicts grad_clip={cfg.grad_clip} of the "
            'training config; set it to "auto"'
        )


def _resolve_precision(ds: dict, precision: str, where: str) -> None:
    """Precision sections (in place): the training config decides; explicit ds values must agree with it."""
    bf16 = _enabled(ds.get("bf16"), "bf16", where)
    fp16 = _enabled(ds.get("fp16"), "fp16", where)
    ac = ds.get("torch_autocast")
    ac_on = _enabled(ac, "torch_autocast", where)
    if fp16 is True and precision != "fp16":
        raise ConfigError(
            f"{where}: fp16.enabled=true contradicts the training config's precision {precision}; "
            'set precision in the training config (fp16 only on GPU) and leave fp16 at "auto"'
        )
    if bf16 is True:
        raise ConfigError(
            f'{where}: set bf16.enabled to "auto" or false; bf16 is applied as torch autocast '
            "(fp32 master weights) when the training config's precision is bf16"
        )
    if ac_on is True and precision != "bf16":
        raise ConfigError(f"{where}: torch_autocast.enabled=true contradicts precision {precision}")
    if ac_on is False and precision == "bf16":
        raise ConfigError(
            f'{where}: torch_autocast.enabled=false contradicts precision bf16; set it to "auto"'
        )
    ds["bf16"] = {"enabled": False}
    fp16_sec = dict(ds.get("fp16") or {})
    fp16_sec["enabled"] = precision == "fp16"
    ds["fp16"] = fp16_sec
    ac_sec = dict(ac or {})
    ac_sec["enabled"] = precision == "bf16"
    if ac_sec.get("dtype", "auto") not in ("auto", "bfloat16", "torch.bfloat16"):
        raise ConfigError(f'{where}: torch_autocast.dtype must be "auto" or "bfloat16"')
    ac_sec["dtype"] = "bfloat16"
    ds["torch_autocast"] = ac_sec


def _find_auto(obj, prefix: str = "") -> list[str]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _find_auto(v, f"{prefix}{k}.")
    elif obj == "auto":
        out.append(prefix.rstrip("."))
    return out


def zero_stage(ds: dict) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))
