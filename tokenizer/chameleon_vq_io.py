"""Reading Chameleon's released VQGAN files (``vqgan.yaml`` + ``vqgan.ckpt``) and the labelled conversion step.

Design choices
* A Chameleon tokenizer folder is the released ``tokenizer/`` directory: ``vqgan.yaml`` (architecture),
  ``vqgan.ckpt`` (a PyTorch Lightning checkpoint) and ``text_tokenizer.json``. ``load_chameleon_vq(dir)``
  prefers ``vqgan.safetensors`` (what ``xprompt convert vqgan`` writes) and otherwise reads ``vqgan.ckpt``
  with ``torch.load(weights_only=True)`` only. Where torch refuses (Lightning pickles callbacks and
  hyper-parameters as arbitrary objects), loading stops with one line naming the refused globals and the
  ``xprompt convert vqgan`` command; nothing is ever unpickled with ``weights_only=False``.
* ``convert_vqgan`` is that separate, explicit step. It lists the refused globals
  (``torch.serialization.get_unsafe_globals_in_checkpoint``) and registers an inert *stub* class under each
  name for one ``weights_only=True`` load: the stubs accept and discard their arguments, so no code named by
  the file runs. Names in modules torch blocks outright (``os``, ``posix``, ``subprocess``, ...: a
  ``__reduce__`` calling ``os.mkdir``) cannot be stubbed and the conversion refuses the file. Only the tensors
  of ``state_dict`` are kept; the output folder records what was stubbed and dropped in ``conversion.json``.
* Strict loading: every tensor the architecture has must be present with its shape, and nothing else, except
  the Lightning training-only ``loss.*`` tensors (discriminator, LPIPS), which are dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from pickle import UnpicklingError  # the exception a refused weights_only load raises; nothing is unpickled

import torch

from xprompt.config_io import config_from_dict
from xprompt.errors import CheckpointError, ConfigError
from xprompt.tokenizer.chameleon_vq import ChameleonVQ, ChameleonVQConfig

YAML, CKPT, SAFETENSORS = "vqgan.yaml", "vqgan.ckpt", "vqgan.safetensors"
TRAINING_ONLY = ("loss.",)  # Lightning VQGAN checkpoints carry the GAN discriminator and LPIPS here


def is_chameleon_tokenizer_dir(path) -> bool:
    p = Path(path)
    return (p / YAML).is_file() and ((p / CKPT).is_file() or (p / SAFETENSORS).is_file())


def config_from_yaml(path) -> ChameleonVQConfig:
    """``vqgan.yaml`` (taming layout: ``model.params.{embed_dim, n_embed, ddconfig}``) -> ``ChameleonVQConfig``."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} is not a readable YAML file ({str(e).splitlines()[0]})") from None
    params = (data or {}).get("model", {}).get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict) or not isinstance(params.get("ddconfig"), dict):
        raise CheckpointError(
            f"{path}: expected a VQGAN config with model.params.ddconfig (Chameleon's vqgan.yaml)"
        )
    fields = dict(params["ddconfig"], embed_dim=params.get("embed_dim"), n_embed=params.get("n_embed"))
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return config_from_dict(ChameleonVQConfig, fields, where=str(path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def save_yaml(cfg: ChameleonVQConfig, path) -> None:
    """Write ``cfg`` in the released ``vqgan.yaml`` layout (tests build published-layout folders with it)."""
    import dataclasses

    import yaml

    from xprompt.io_utils import atomic_write_text

    dd = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("embed_dim", "n_embed")}
    doc = {"model": {"params": {"embed_dim": cfg.embed_dim, "n_embed": cfg.n_embed, "ddconfig": dd}}}
    atomic_write_text(Path(path), yaml.safe_dump(doc, sort_keys=False))


def _state_dict_of(obj, where: str) -> dict[str, torch.Tensor]:
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{where} holds no state_dict of tensors")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: state_dict entry {bad[0]!r} is not a tensor")
    return dict(sd)


def read_ckpt_weights_only(path) -> dict[str, torch.Tensor]:
    """The state dict of a ``.ckpt`` via ``torch.load(weights_only=True)``; a refusal -> ``CheckpointError``."""
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except UnpicklingError:
        names = _unsafe_globals(path)
        raise CheckpointError(
            f"{path} pickles objects beyond tensors ({', '.join(names[:3]) or 'refused globals'}) that "
            "torch.load(weights_only=True) refuses; extract its weights once with `xprompt convert vqgan "
            f"--in {path} --out DIR` and load DIR"
        ) from None
    except (OSError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]})"
        ) from None
    return _state_dict_of(obj, str(path))


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, OSError, UnpicklingError):
        return []


def _stub(full_name: str) -> type:
    """An inert class registered under ``full_name``: called, constructed or given state, it does nothing."""
    module, _, name = full_name.rpartition(".")
    return type(
        name or full_name,
        (),
        {
            "__module__": module,
            "__init__": lambda self, *a, **k: None,
            "__setstate__": lambda self, state: None,
            "__repr__": lambda self: f"<stub {full_name}>",
        },
    )


def extract_state_dict(path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, stubbed global names) of a Lightning ``.ckpt``, loaded weights-only with inert stubs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    names = _unsafe_globals(path)
    stubs = [(_stub(n), n) for n in names]
    try:
        with torch.serialization.safe_globals(stubs):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (UnpicklingError, OSError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "unrecognized" in ln), lines[0] if lines else "")
        raise CheckpointError(
            f"{path}: refused, its pickle names code that torch will not stub ({why}); the file is not a "
            "plain weights checkpoint: get the weights from a trusted source"
        ) from None
    return _state_dict_of(obj, str(path)), names


def strict_load(model: ChameleonVQ, sd: dict[str, torch.Tensor], where: str) -> int:
    """Load ``sd`` into ``model`` strictly (training-only ``loss.*`` tensors dropped); returns how many dropped."""
    kept = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY)}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(kept)), sorted(set(kept) - set(own))
    shapes = [k for k in own if k in kept and tuple(kept[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:2]}" * bool(missing), f"unexpected {unexpected[:2]}" * bool(unexpected)]
        if shapes:
            parts.append(
                f"shape of {shapes[0]} {tuple(kept[shapes[0]].shape)} vs {tuple(own[shapes[0]].shape)}"
            )
        raise CheckpointError(f"{where}: weights do not match vqgan.yaml: {'; '.join(p for p in parts if p)}")
    model.load_state_dict({k: v.float() for k, v in kept.items()}, strict=True)
    return len(sd) - len(kept)


def load_chameleon_vq(path) -> ChameleonVQ:
    """A Chameleon tokenizer folder (``vqgan.yaml`` + ``vqgan.safetensors`` or ``vqgan.ckpt``) -> eval model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / YAML).is_file():
        raise CheckpointError(
            f"{path} has no {YAML} (a Chameleon tokenizer folder holds vqgan.yaml + vqgan.ckpt)"
        )
    model = ChameleonVQ(config_from_yaml(path / YAML))
    if (path / SAFETENSORS).is_file():
        try:
            sd = load_file(str(path / SAFETENSORS))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path / SAFETENSORS} is unreadable ({str(e).splitlines()[0]})") from None
        where = str(path / SAFETENSORS)
    elif (path / CKPT).is_file():
        sd, where = read_ckpt_weights_only(path / CKPT), str(path / CKPT)
    else:
        raise CheckpointError(f"{path} has neither {SAFETENSORS} nor {CKPT}")
    strict_load(model, sd, where)
    return model.eval()


def convert_vqgan(src, out, *, yaml_path=None, overwrite: bool = False) -> Path:
    """``xprompt convert vqgan``: ``src`` ``vqgan.ckpt`` -> folder ``out`` with ``vqgan.safetensors``, ``vqgan.yaml``
    (and ``text_tokenizer.json`` when it sits beside the ckpt), plus ``conversion.json`` recording the source's
    sha256, the stubbed globals and the dropped training-only tensors. Checked against the yaml before writing."""
    from safetensors.torch import save_file

    from xprompt.io_utils import atomic_dir

    src, out = Path(src), Path(out)
    yaml_path = Path(yaml_path) if yaml_path else src.with_name(YAML)
    if not yaml_path.is_file():
        raise CheckpointError(f"no {YAML} beside {src}; pass --yaml (the released tokenizer/vqgan.yaml)")
    sd, stubbed = extract_state_dict(src)
    dropped = strict_load(ChameleonVQ(config_from_yaml(yaml_path)), sd, str(src))
    kept = {k: v.contiguous() for k, v in sd.items() if not k.startswith(TRAINING_ONLY)}
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    record = {
        "source": str(src.resolve()),
        "source_sha256": digest.hexdigest(),
        "stubbed_globals": stubbed,
        "dropped_training_tensors": dropped,
        "tensors": len(kept),
    }
    with atomic_dir(out, overwrite=overwrite, marker="conversion.json") as tmp:
        save_file(kept, str(tmp / SAFETENSORS), metadata={"format": "pt", "source": src.name})
        shutil.copyfile(yaml_path, tmp / YAML)
        if (src.parent / "text_tokenizer.json").is_file():
            shutil.copyfile(src.parent / "text_tokenizer.json", tmp / "text_tokenizer.json")
        (tmp / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return out
