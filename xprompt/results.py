"""What the pipeline returns besides images: ``EditResult`` (with what was ``Retrieved``) and ``Description``.

Design choices
* Split from ``pipeline.py``: plain dataclasses that hold no model and run nothing; ``xprompt.pipeline``
  imports them, so ``from xprompt.pipeline import EditResult`` (the documented import) keeps working.
* A description carries its confidence (mean token log-probability under the model) so callers can flag
  guesses instead of presenting them as answers (``DESCRIBE_CONFIDENT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Retrieved:
    """One retrieved store entry: its instruction, task, cosine score and (source, target) pair."""

    instruction: str
    task: str
    score: float
    pair: tuple[np.ndarray, np.ndarray]


@dataclass
class EditResult:
    """What ``XPrompt.edit`` returns for one image: the edited image and what was retrieved for it."""

    image: np.ndarray  # uint8 (H, W, 3) at the input's size (the model's with keep_model_size=True)
    instruction: str
    mode: str  # the context mode used: "xp"/"full" with retrieved examples, "none" without
    retrieved: list[Retrieved] = field(default_factory=list)  # best first
    mask: np.ndarray | None = None  # bool (H, W) pixel mask at the output's size (mask-guided editing)

    @property
    def instructions(self) -> list[str]:
        return [r.instruction for r in self.retrieved]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.retrieved]

    @property
    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [r.pair for r in self.retrieved]


DESCRIBE_CONFIDENT = -0.3  # mean token log-prob (74 % per token) below which a description is flagged: the
# shipped tiny model scored -6.5 to -0.53 on 24 suite difference pairs and got none of them right (docs/model.md)


@dataclass
class Description:
    """A difference description and the model's confidence in it: ``mean_logprob`` is the mean natural-log
    probability of its tokens (and of the end-of-text token) under the model; ``token_prob`` its exp."""

    text: str
    mean_logprob: float
    tokens: int

    @property
    def token_prob(self) -> float:
        return float(np.exp(self.mean_logprob))

    @property
    def confident(self) -> bool:
        return self.mean_logprob >= DESCRIBE_CONFIDENT
