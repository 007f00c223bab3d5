"""Validation of parsed command-line arguments, once, for every command (``xprompt.cli.main``).

Design choices
* One table of rules keyed by the argument's ``dest`` (``RULES``), with per-command exceptions
  (``COMMAND_RULES``) where one name means two things (``t2i --size`` is a grid in codes, elsewhere pixels).
  The rules live here and not in the option definitions, so every command gets the same checks and messages
  and the option modules stay declarative. ``tests/test_bad_inputs.py`` walks every parser and fails when a
  numeric option has no rule, so a new option cannot skip validation.
* Numbers: NaN and infinities (argparse's ``float`` accepts "nan" and "inf") and values out of range are one
  ``XPromptError`` line naming the option, the allowed range and the value. Upper bounds are generous sanity
  limits (what would exhaust memory or overflow a seed), not tuning advice.
* Free text (``TEXT_ARGS``: instructions, prompts): Python hands undecodable argv bytes over as lone
  surrogates (PEP 383); they are re-decoded as UTF-8 where possible, else refused naming the byte. Then NFC
  normalisation, line breaks and tabs become spaces, other control characters are removed, and the length is
  bounded (``MAX_TEXT``) with a clear message.
* ``--set KEY=VALUE``: the key must be a config field name, the value's JSON must not hold NaN/Infinity
  (Python's json accepts them) and is bounded in length; the config dataclass then checks types and ranges.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import unicodedata
from dataclasses import dataclass

from xprompt.errors import XPromptError

MAX_TEXT = 2000  # characters of an instruction or prompt (the models' contexts hold far fewer tokens)
MAX_SET_VALUE = 10_000  # characters of one --set value
TEXT_ARGS = ("instruction", "prompt")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding limit
BIG = 10**9


@dataclass(frozen=True)
class Range:
    """``lo <= x <= hi`` (``lo < x`` when ``lo_open``); ``integer`` says what the option takes."""

    lo: float
    hi: float
    integer: bool = True
    lo_open: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo, hi = (f"{int(v):,}" if self.integer else f"{v:g}" for v in (self.lo, self.hi))
        return f"{kind} {'>' if self.lo_open else '>='} {lo} and <= {hi}"

    def ok(self, x) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        return above and x <= self.hi


def Int(lo: int, hi: int = BIG) -> Range:
    return Range(lo, hi)


def Real(lo: float, hi: float, *, lo_open: bool = False) -> Range:
    return Range(lo, hi, integer=False, lo_open=lo_open)


RULES: dict[str, Range] = {
    # sampling and generation
    "top_k": Int(1, 10**7),
    "temperature": Real(0, 100, lo_open=True),
    "cfg": Real(0, 100),
    "max_tokens": Int(1, 65_536),
    "image_size": Int(1, 8192),
    "mask_dilate": Int(0, 1024),
    "feather": Int(0, 1024),
    "image_weight": Real(0, 1),
    "k": Int(1, 10_000),
    "queries": Int(1, 10_000),
    # common
    "seed": Int(0, SEED_MAX),
    "corpus_seed": Int(0, SEED_MAX),
    "random": Int(0, SEED_MAX),
    "threads": Int(0, 4096),
    "workers": Int(1, 1024),
    "local_rank": Int(-1, 4096),
    # sizes and counts
    "size": Int(1, 8192),
    "n": Int(1, BIG),
    "limit": Int(1, BIG),
    "source_limit": Int(0, BIG),  # data build --source-limit: 0 = all pairs
    "depth_scale": Real(0, 1e9, lo_open=True),  # NYUv2 16-bit PNG units per metre
    "port": Int(1, 65_535),
    "queue_size": Int(1, 10_000),
    "scale": Int(1, 64),
    "num_xp": Int(0, 4096),
    "shard_size": Int(1, BIG),
    "group_size": Int(1, 10_000),
    "nprobe": Int(1, 1 << 20),
    "corpus_size": Int(1, BIG),
    "vocab_size": Int(1, 1 << 24),
    "min_frequency": Int(1, BIG),
    # training
    "steps": Int(1, BIG),
    "max_steps": Int(1, BIG),
    "stop_after": Int(1, BIG),
    "epochs": Int(1, 1_000_000),
    "batch_size": Int(1, 1 << 20),
    "lr": Real(0, 10, lo_open=True),
    "beta": Real(0, 100),
    "l1_weight": Real(0, 1e6),
    "order_weight": Real(0, 1e6),
    "photo_frac": Real(0, 1),
    "max_minutes": Real(0, 1e7),
    "eval_every": Int(1, BIG),
    "eval_images": Int(1, BIG),
    "layers": Int(1, 1024),
    "zero_stage": Int(0, 3),
    # VQ architecture
    "factor": Int(1, 256),
    "codebook_size": Int(2, 1 << 24),
    "code_dim": Int(1, 65_536),
    "base_channels": Int(1, 65_536),
    "max_channels": Int(1, 65_536),
    "res_blocks": Int(0, 64),
    "patch": Int(1, 64),
}

# (command path, dest) -> rule, where a dest means something else in one command
COMMAND_RULES: dict[tuple[str, str], Range] = {
    ("t2i", "size"): Int(1, 1024),  # grid size in codes (H W), not pixels
    ("data build", "n"): Int(0, BIG),  # 0 = only the --source pairs (build_dataset refuses 0 without them)
}


def leaf_actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, list]:
    """(command path such as "index build", the actions of the parser that parsed it), following the
    sub-command choices recorded in ``args``."""
    path = []
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        choice = getattr(args, sub.dest, None) if sub is not None else None
        if choice is None:
            return " ".join(path), list(parser._actions)
        path.append(choice)
        parser = sub.choices[choice]


def is_numeric(action) -> bool:
    return action.type in (int, float)


def rule_for(command: str, dest: str) -> Range | None:
    return COMMAND_RULES.get((command, dest), RULES.get(dest))


def _option(action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return (longs or action.option_strings or [action.dest])[0]


def check_number(option: str, rule: Range, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise XPromptError(f"{option} must be a finite number, got {value}")
    if not rule.ok(value):
        raise XPromptError(f"{option} must be {rule.describe()}, got {value}")


def clean_text(value: str, option: str, max_len: int = MAX_TEXT) -> str:
    """Normalised free text (see the module doc); ``XPromptError`` for undecodable bytes or too long text."""
    if any("\udc80" <= c <= "\udcff" for c in value):
        raw = value.encode("utf-8", "surrogateescape")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise XPromptError(
                f"{option} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start}); "
                "pass the text in UTF-8"
            ) from None
    text = unicodedata.normalize("NFC", value)
    text = "".join(" " if c in "\t\n\r\v\f" else c for c in text if c in "\t\n\r\v\f" or not _control(c))
    text = text.strip()
    if value.strip() and not text:
        raise XPromptError(f"{option} holds only control characters; pass readable text")
    if len(text) > max_len:
        raise XPromptError(f"{option} is too long ({len(text):,} characters; at most {max_len:,})")
    return text


def _control(c: str) -> bool:
    return unicodedata.category(c) == "Cc" or "\ud800" <= c <= "\udfff"


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def check_set_items(items: list[str]) -> None:
    """``--set KEY=VALUE`` items: key a field name, value bounded and (as JSON) free of NaN/Infinity."""
    for item in items:
        if "=" not in item:
            raise XPromptError(f"--set expects KEY=VALUE, got {item[:80]!r}")
        key, val = item.split("=", 1)
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise XPromptError(f"--set: {key[:80]!r} is not a config field name")
        if len(val) > MAX_SET_VALUE:
            raise XPromptError(f"--set {key}: value too long ({len(val):,} characters)")
        clean_text(val, f"--set {key}", MAX_SET_VALUE)  # undecodable bytes -> one line
        try:
            parsed = json.loads(val)
        except (json.JSONDecodeError, RecursionError):
            continue  # taken as a string by the command
        if _non_finite(parsed):
            raise XPromptError(f"--set {key}: {val} is not a finite number")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate (and normalise text in) ``args`` as parsed by ``parser``; bad values raise ``XPromptError``."""
    command, actions = leaf_actions(parser, args)
    for action in actions:
        value = getattr(args, action.dest, None)
        if value is None or action.dest in ("help", "version"):
            continue
        if is_numeric(action):
            rule = rule_for(command, action.dest)
            if rule is None:  # a programming error: tests/test_bad_inputs.py catches it first
                raise RuntimeError(f"no validation rule for {command} {_option(action)}; add it to RULES")
            for v in value if isinstance(value, list) else [value]:
                check_number(_option(action), rule, v)
        elif action.dest in TEXT_ARGS and isinstance(value, str):
            setattr(args, action.dest, clean_text(value, _option(action)))
        elif action.dest == "overrides" and isinstance(value, list):
            check_set_items(value)
