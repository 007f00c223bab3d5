"""The reproducible photograph pool: a committed manifest of Debian package images, verified by checksum.

Design choices:
- Two named pools. ``packaged`` is the 9 training photographs that ship inside Python packages (always
  present; what every build used before). ``debian`` adds ~250 colour photographs and wallpapers from four
  Debian packages (``PACKAGES``), installed by ``make photos``. Nothing is picked up just because it happens to
  be installed: a pool is exactly the files its manifest lists, so two builds of the same config on two
  machines draw from the same pixels.
- The manifest (``photo_manifest_debian.json``, next to this module) lists each file's path, package, byte
  size and sha256. ``resolve`` refuses a pool with a missing or changed file (one line, naming the first file
  and the command that fixes it) instead of silently training on fewer photographs.
- The selection rule that wrote the manifest lives here too (``scan``), so the manifest can be re-derived
  and reviewed: colour JPEGs of opencv-doc over 20 kB with a short side >= 192 px; the largest image of each
  Plasma wallpaper; MATE's ``nature`` photographs; all UKUI wallpapers.
- A pool's fingerprint (sha256 over its sorted file checksums) goes into every dataset card.
- Evaluation photographs (``sources.EVAL_PHOTOS``) are never in a pool; ``scan`` drops any file whose bytes
  equal one of them, and keeps one file of each set of byte-identical copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

from xprompt.errors import XPromptError
from xprompt.integrity import sha256_file

PACKAGES: tuple[str, ...] = (
    "opencv-doc",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "ukui-wallpapers",
)
POOLS: tuple[str, ...] = ("packaged", "debian")
MANIFEST = Path(__file__).with_name("photo_manifest_debian.json")
FIX_HINT = "run `make photos` (apt-get installs " + " ".join(PACKAGES) + ")"


def fingerprint(checksums: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(checksums)).encode()).hexdigest()


def check_pool(name: str) -> None:
    if name not in POOLS:
        raise XPromptError(f"unknown photo pool {name!r}; use one of {', '.join(POOLS)}")


@functools.lru_cache(maxsize=1)
def load_manifest() -> tuple[dict, ...]:
    data = json.loads(MANIFEST.read_text())
    return tuple(data["files"])


@functools.lru_cache(maxsize=1)
def debian_paths() -> tuple[str, ...]:
    """Paths of the ``debian`` pool's extra files, each checked against the manifest (size, then sha256)."""
    entries = load_manifest()
    for e in entries:
        p = Path(e["path"])
        if not p.is_file():
            n_missing = sum(not Path(x["path"]).is_file() for x in entries)
            raise XPromptError(
                f"photo pool 'debian': {n_missing} of {len(entries)} files are missing (first: {p}); {FIX_HINT}"
            )
        if p.stat().st_size != e["bytes"] or sha256_file(p) != e["sha256"]:
            raise XPromptError(
                f"photo pool 'debian': {p} differs from the manifest (another version of {e['package']}?); "
                f"reinstall it with {FIX_HINT}, or regenerate {MANIFEST.name} with `xprompt data photos --scan`"
            )
    return tuple(e["path"] for e in entries)


def pool_card(name: str, packaged: tuple[str, ...]) -> dict:
    """What a dataset card records about the pool a build drew from."""
    check_pool(name)
    sums = [sha256_file(p) for p in packaged]
    n = len(packaged)
    if name == "debian":
        entries = load_manifest()
        debian_paths()  # verified
        sums += [e["sha256"] for e in entries]
        n += len(entries)
    return {"pool": name, "photos": n, "fingerprint": fingerprint(sums)}


def _dpkg_files(package: str) -> list[str]:
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise XPromptError(f"Debian package {package} is not installed; {FIX_HINT}") from None
    return sorted(f for f in out.split() if f.lower().endswith((".jpg", ".jpeg", ".png")))


def _is_colour(path: str) -> bool:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (256, 256))
        a = np.asarray(im.convert("RGB"), dtype=np.float32)  # (h, w, 3)
    return float(np.abs(a - a.mean(-1, keepdims=True)).mean()) >= 4.0


def _short_side(path: str) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return min(im.size)


def _select(package: str, files: list[str]) -> list[str]:
    if package == "opencv-doc":
        jpgs = [f for f in files if f.lower().endswith((".jpg", ".jpeg")) and Path(f).stat().st_size > 20_000]
        return [f for f in jpgs if _short_side(f) >= 192 and _is_colour(f)]
    if package == "plasma-workspace-wallpapers":
        best: dict[str, tuple[int, str]] = {}
        for f in files:
            if "/contents/images/" not in f:
                continue  # screenshots and previews
            wall = f.split("/contents/")[0]
            area = _area(f)
            if area > best.get(wall, (0, ""))[0]:
                best[wall] = (area, f)
        return sorted(f for _, f in best.values())
    if package == "mate-backgrounds":
        return [f for f in files if "/nature/" in f]
    return files


def _area(path: str) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0] * im.size[1]


def scan(exclude_sha256: set[str]) -> list[dict]:
    """Re-derive the manifest entries from the installed packages (the rule in the module docstring)."""
    entries, seen = [], set(exclude_sha256)
    for package in PACKAGES:
        for f in _select(package, _dpkg_files(package)):
            digest = sha256_file(f)
            if digest in seen:
                continue  # an evaluation photograph, or a copy of a file already listed
            seen.add(digest)
            entries.append({"path": f, "package": package, "bytes": Path(f).stat().st_size, "sha256": digest})
    return entries
