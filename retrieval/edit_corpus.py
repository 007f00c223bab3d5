"""A generated training corpus of edit-instruction triples for the ``minilm-edit`` encoder (issue #6).

``build_corpus(n, seed)`` -> ``list[Triple]``: (anchor, positive, hard negative, key). Anchor and positive
say the *same* edit in different words; the negative is the edit most easily confused with it: the inverse
operation (add <-> remove rain, bigger <-> smaller, zoom in <-> out, replace A by B <-> B by A) or the same
operation on another object / colour / place / angle. Trained with an in-batch contrastive loss, this teaches
the encoder that direction and operation matter more than shared nouns.

Design choices
* A paraphrase grammar: every operation has many templates (verbs, result phrasings such as "make the noisy
  photo clean", jargon such as "derain", optional filler like "this photo") and slots drawn from broad
  lexicons (objects, people, accessories, places, colours, shapes, styles, backgrounds, angles, regions).
  Positive = two *different* templates rendered with the same slot values.
* The task suite's own paraphrases (``xprompt.train.tasks``) are mixed in: two templates of one task with the
  same params; negative = its reverse task with the same params, else the same task with other params.
* ``key`` names the edit (operation + slot values, suite tasks mapped onto the grammar's keys where they mean
  the same edit), so a trainer can keep two triples of the same edit out of one batch: with in-batch
  negatives they would otherwise be pushed apart.
* The grammar's data lives in ``edit_lexicon`` (slot values), ``edit_templates_lowlevel`` and
  ``edit_templates`` (templates, inverses, suite keys); this module is the generator.
* Deterministic in ``seed`` (one ``numpy`` Generator). ``exclude`` drops every triple containing one of the
  given texts (compared lower-cased without punctuation): the paraphrase test sets are never trained on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from xprompt.retrieval.edit_lexicon import (
    ACCESSORIES,
    ATTRS,
    BACKGROUNDS,
    COLORS,
    IMG,
    NOUN,
    OBJECTS,
    PEOPLE,
    PLACES,
    POSITIONS,
    SEASONS,
    SHAPES,
    SIZES,
    STYLES,
    WORDS,
)
from xprompt.retrieval.edit_templates import GEOMETRY, GEOMETRY_SLOT, INVERSE, OPS, SUITE_KEYS
from xprompt.retrieval.edit_templates_lowlevel import LOWLEVEL

CORPUS_VERSION = "c1"


@dataclass(frozen=True)
class Triple:
    anchor: str
    positive: str
    negative: str
    key: str  # identity of the anchor's edit (operation + slot values)
    neg_key: str  # identity of the negative's edit


_STOP = frozenset(
    [
        "the",
        "this",
        "a",
        "an",
        "image",
        "picture",
        "photo",
        "photograph",
        "shot",
        "scene",
        "it",
        "its",
        "of",
        "to",
        "in",
        "please",
    ]
)


def canon(text: str) -> str:
    """How ``exclude`` compares texts: lower-cased, without punctuation, articles, filler nouns ("the image",
    "this photo", "it") and "please", so a test sentence with other filler still counts as the same."""
    return " ".join(w for w in re.sub(r"[^\w\s]", " ", text.lower()).split() if w not in _STOP)


class _Gen:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def two(self, templates):
        i, j = self.rng.choice(len(templates), 2, replace=False)
        return templates[int(i)], templates[int(j)]

    def surface(self, t: str) -> str:
        """Random filler / punctuation / case variation of a rendered template."""
        r = self.rng.random()
        if r < 0.15:
            t = t.rstrip(".?")
        elif r < 0.2:
            t = "Please " + t[0].lower() + t[1:]
        if self.rng.random() < 0.1:
            t = t.lower()
        return " ".join(t.split())

    def fill(self, t: str, **slots) -> str:
        vals = {"img": self.pick(IMG), "n": self.pick(NOUN), **slots}
        out = t.format(**vals).replace(" .", ".").replace(" ,", ",")
        out = re.sub(r"\ba ([aeiouAEIOU])", r"an \1", out)
        return self.surface(out[0].upper() + out[1:])

    # ------------------------------------------------------------------ generators: each returns a Triple
    def lowlevel(self) -> Triple:
        concept = self.pick(list(LOWLEVEL))
        d = int(self.rng.integers(2))  # 0 restore/remove, 1 degrade/add
        t1, t2 = self.two(LOWLEVEL[concept][d])
        if self.rng.random() < 0.7:  # the inverse operation
            neg = self.pick(LOWLEVEL[concept][1 - d])
            return Triple(
                self.fill(t1),
                self.fill(t2),
                self.fill(neg),
                f"ll:{concept}:{'-+'[d]}",
                f"ll:{concept}:{'+-'[d]}",
            )
        other = self.pick([c for c in LOWLEVEL if c != concept])  # the same direction of another concept
        return Triple(
            self.fill(t1),
            self.fill(t2),
            self.fill(self.pick(LOWLEVEL[other][d])),
            f"ll:{concept}:{'-+'[d]}",
            f"ll:{other}:{'-+'[d]}",
        )

    def _slots(self, names, shapes: bool) -> dict:
        obj = (
            f"{self.pick(SIZES) + ' ' if self.rng.random() < 0.3 else ''}{self.pick(COLORS)} {self.pick(SHAPES)}"
            if shapes
            else (
                f"{self.pick(COLORS)} {self.pick(OBJECTS)}" if self.rng.random() < 0.3 else self.pick(OBJECTS)
            )
        )
        s = {"o": obj}
        for k in names:
            if k == "pl":
                s[k] = (
                    (
                        f"at the {self.pick(POSITIONS[self.pick(list(POSITIONS))])}"
                        if shapes
                        else self.pick(PLACES)
                    )
                    if self.rng.random() < 0.7
                    else ""
                )
            elif k == "pos":
                s["pos"] = self.pick(list(POSITIONS))
            elif k == "b":
                s[k] = self.pick([x for x in OBJECTS if x not in obj])
            elif k == "c":
                s[k] = self.pick([x for x in COLORS if x not in obj])
            elif k == "p":
                s[k] = self.pick(PEOPLE)
            elif k == "a":
                s[k] = self.pick(ACCESSORIES)
            elif k == "at":
                pair = self.pick(ATTRS)
                s[k], s["_anti"] = pair[int(self.rng.integers(2))], None
                s["_anti"] = pair[1] if s[k] == pair[0] else pair[0]
            elif k == "bg":
                s[k] = self.pick(BACKGROUNDS)
            elif k == "s":
                s[k] = self.pick(STYLES)
            elif k == "se":
                s[k] = self.pick(list(SEASONS))
            elif k == "w":
                s[k] = self.pick(WORDS)
        return s

    def slot_op(self, shapes: bool = False) -> Triple:
        names = ["add", "remove", "recolor", "bigger", "smaller", "move"] if shapes else list(OPS)
        op = self.pick(names)
        templates, slot_names = OPS[op]
        s = self._slots(slot_names, shapes)

        def key(o, sl):
            return f"op:{o}:" + "|".join(f"{k}={sl[k]}" for k in sorted(OPS[o][1]))

        def render(
            t, sl
        ):  # a canonical position / season is rendered with one of its phrasings, per sentence
            var = {k: self.pick(lex[sl[k]]) for k, lex in (("pos", POSITIONS), ("se", SEASONS)) if k in sl}
            return self.fill(t, **{**sl, **var})

        t1, t2 = self.two(templates)
        a, p = render(t1, s), render(t2, s)
        r = self.rng.random()
        on_object = [o for o in names if o != op and "o" in OPS[o][1]] if "o" in slot_names else []
        if op in INVERSE and r < 0.4:
            nop, ns = INVERSE[op], s
        elif op == "replace" and r < 0.3:  # B -> A is the inverse of A -> B
            nop, ns = op, {**s, "o": s["b"], "b": s["o"]}
        elif op == "attr" and r < 0.35:
            nop, ns = op, {**s, "at": s["_anti"]}
        elif on_object and r < 0.75:  # another operation on the same object: the operation must dominate
            nop = self.pick(on_object)
            ns = {**self._slots(OPS[nop][1], shapes), "o": s["o"]}
        else:  # the same operation with one slot changed
            diff: list[str] = []
            while not diff:  # redraw until some identifying slot differs
                s2 = self._slots(slot_names, shapes)
                diff = [k for k in slot_names if s2[k] != s[k]]
            changed = self.pick(diff)
            nop, ns = op, {**s, changed: s2[changed]}
        neg = render(self.pick(OPS[nop][0]), ns)
        return Triple(a, p, neg, key(op, s), key(nop, ns))

    def geometry(self) -> Triple:
        if self.rng.random() < 0.3:
            op = self.pick(list(GEOMETRY_SLOT))
            templates, values = GEOMETRY_SLOT[op]
            v = self.pick(values)
            t1, t2 = self.two(templates)
            slot = "r" if op == "crop" else "d"
            nv = self.pick([x for x in values if x != v])
            return Triple(
                self.fill(t1, **{slot: v}),
                self.fill(t2, **{slot: v}),
                self.fill(self.pick(templates), **{slot: nv}),
                f"geo:{op}:{v}",
                f"geo:{op}:{nv}",
            )
        op = self.pick(list(GEOMETRY))
        t1, t2 = self.two(GEOMETRY[op])
        nop = self.pick([o for o in GEOMETRY if o != op])
        return Triple(
            self.fill(t1), self.fill(t2), self.fill(self.pick(GEOMETRY[nop])), f"geo:{op}", f"geo:{nop}"
        )

    def suite(self, tasks) -> Triple | None:
        task = self.pick(tasks)
        params = task.sample_params(self.rng)
        texts = list(dict.fromkeys(task.all_instructions(params)))
        if len(texts) < 2:
            return None
        a, p = self.two(texts)

        def key(t, prm):
            return SUITE_KEYS.get(t.name) or f"suite:{t.name}:{sorted(map(str, prm.items()))}"

        rev = tasks_by_name().get(task.reverse) if task.reverse and task.reverse != task.name else None
        if rev is not None and self.rng.random() < 0.7:
            neg, nkey = self.pick(rev.all_instructions(params)), key(rev, params)
        else:
            p2 = task.sample_params(self.rng)
            other = [t for t in task.all_instructions(p2) if t not in texts]
            if other:
                neg, nkey = self.pick(other), key(task, p2)
            else:  # a parameter-free task: a fixed instruction of another task of its family (or any)
                alt = [o for o in tasks if o.family == task.family and o is not task] or [
                    o for o in tasks if o is not task
                ]
                o = self.pick(alt)
                p3 = o.sample_params(self.rng)
                neg, nkey = self.pick(o.all_instructions(p3)), key(o, p3)
        return Triple(self.surface(a), self.surface(p), self.surface(neg), key(task, params), nkey)


def build_order_corpus(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """``n`` (anchor, same operation on other slots, another operation on the anchor's object) triples of
    object / shape edits, for a margin loss that ranks "same operation" above "same object" (what task-level
    RAIE retrieval needs when the store has no paraphrase of the query). Deterministic in ``seed``."""
    gen = _Gen(seed + 7919)
    banned = {canon(t) for t in exclude}
    out: list[tuple[str, str, str]] = []
    while len(out) < n:
        shapes = bool(gen.rng.random() < 0.5)
        names = ["add", "remove", "recolor", "bigger", "smaller", "move"] + (
            [] if shapes else ["replace", "attr"]
        )
        op = gen.pick(names)
        s = gen._slots(OPS[op][1], shapes)
        s2 = gen._slots(OPS[op][1], shapes)
        if s2["o"] == s["o"]:
            continue
        nop = gen.pick([o for o in names if o != op and o != INVERSE.get(op)])
        s3 = {**gen._slots(OPS[nop][1], shapes), "o": s["o"]}

        def render(o, sl):
            var = {"pos": gen.pick(POSITIONS[sl["pos"]])} if "pos" in sl else {}
            return gen.fill(gen.pick(OPS[o][0]), **{**sl, **var})

        tr = (render(op, s), render(op, s2), render(nop, s3))
        if not banned & {canon(t) for t in tr}:
            out.append(tr)
    return out


def tasks_by_name() -> dict:
    from xprompt.train.tasks import all_tasks

    return all_tasks()


# share of each generator in the corpus
MIX = (("lowlevel", 0.22), ("objects", 0.28), ("shapes", 0.15), ("geometry", 0.15), ("suite", 0.20))


def build_corpus(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[Triple]:
    """``n`` distinct training triples, deterministic in ``seed``; triples containing any ``exclude`` text
    (compared with ``canon``) are dropped and replaced."""
    if n < 1:
        from xprompt.errors import XPromptError

        raise XPromptError(f"corpus size must be >= 1, got {n}")
    gen = _Gen(seed)
    banned = {canon(t) for t in exclude}
    tasks = [t for t in tasks_by_name().values() if t.kind == "i2i"]
    names, probs = zip(*MIX, strict=True)
    out: list[Triple] = []
    seen: set[tuple[str, str]] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 1000:
            raise RuntimeError(f"corpus generator stalled at {len(out)} of {n} triples")
        kind = names[int(gen.rng.choice(len(names), p=probs))]
        tr = (
            gen.lowlevel()
            if kind == "lowlevel"
            else gen.slot_op(False)
            if kind == "objects"
            else gen.slot_op(True)
            if kind == "shapes"
            else gen.geometry()
            if kind == "geometry"
            else gen.suite(tasks)
        )
        if tr is None or tr.key == tr.neg_key or canon(tr.anchor) in (canon(tr.positive), canon(tr.negative)):
            continue
        if (tr.anchor, tr.positive) in seen or banned & {
            canon(tr.anchor),
            canon(tr.positive),
            canon(tr.negative),
        }:
            continue
        seen.add((tr.anchor, tr.positive))
        out.append(tr)
    return out


def batches(triples: list[Triple], batch_size: int, seed: int = 0) -> list[list[Triple]]:
    """Shuffle and cut into batches in which no anchor's edit (``key``) occurs twice, and no triple's
    negative is another anchor's edit (greedy; a triple that does not fit waits for the next batch): with
    in-batch negatives, a paraphrase of the anchor must never be a candidate negative."""
    rng = np.random.default_rng(seed)
    pending = [triples[i] for i in rng.permutation(len(triples))]
    out: list[list[Triple]] = []
    while pending:
        batch, keys, neg_keys, rest = [], set(), set(), []
        for tr in pending:
            if (
                len(batch) < batch_size
                and tr.key not in keys
                and tr.key not in neg_keys
                and tr.neg_key not in keys
            ):
                batch.append(tr)
                keys.add(tr.key)
                neg_keys.add(tr.neg_key)
            else:
                rest.append(tr)
        out.append(batch)
        pending = rest
    return out
