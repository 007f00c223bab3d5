"""RAIE training pairing: nearest neighbour by instruction, excluding itself and exact duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from test_store import HashEncoder

from xprompt.errors import XPromptError
from xprompt.retrieval.pairing import nearest_neighbours


def _brute(instructions, enc):
    """Reference: exact NN over distinct normalised strings, by full similarity matrix."""
    norm = [" ".join(s.split()) for s in instructions]
    v = enc.encode(norm)
    sims = v @ v.T
    same = np.array([[a == b for b in norm] for a in norm])
    sims[same] = -np.inf
    return sims.max(1), np.array(norm, dtype=object)[sims.argmax(1)]


def test_minilm_pairs_paraphrases():
    ins = [
        "Remove the red circle.",
        "Remove the red circle.",
        "Delete the red circle from the picture.",
        "Derain this image.",
        "Add  rain to the picture.",
        "Add rain to the picture.",
        "Remove the rain from the photo.",
    ]
    nb, sc = nearest_neighbours(ins, return_scores=True)
    assert nb.dtype == np.int64 and nb.shape == (7,)
    assert all(ins[nb[i]] == "Delete the red circle from the picture." for i in (0, 1))
    assert ins[nb[2]] == "Remove the red circle."
    assert ins[nb[3]] == "Remove the rain from the photo."  # thanks to the jargon rewrite
    # "Add  rain" and "Add rain" are the same instruction after whitespace normalisation: never paired
    assert nb[4] not in (4, 5) and nb[5] not in (4, 5)
    assert np.all(nb != np.arange(7)) and np.all((sc > 0) & (sc <= 1.0 + 1e-5))


def test_matches_brute_force_and_batching():
    rng = np.random.default_rng(0)
    words = [
        "red",
        "green",
        "blue",
        "circle",
        "square",
        "star",
        "left",
        "right",
        "add",
        "remove",
        "move",
        "big",
        "small",
        "the",
        "sky",
        "rain",
        "dark",
        "photo",
    ]
    ins = [" ".join(rng.choice(words, int(rng.integers(2, 6)))) for _ in range(300)]
    ins += ins[:40]  # exact duplicates
    enc = HashEncoder(dim=64)
    want_s, _want_txt = _brute(ins, enc)
    for batch in (7, 4096):
        nb, sc = nearest_neighbours(ins, enc, batch=batch, return_scores=True)
        norm = np.array([" ".join(s.split()) for s in ins], dtype=object)
        assert np.all(norm[nb] != norm)  # never itself nor a duplicate of itself
        np.testing.assert_allclose(sc, want_s, atol=1e-5)  # same similarity as the exact NN (ties may differ)
        sims_to_pick = np.einsum("nd,nd->n", enc.encode(list(norm)), enc.encode(list(norm[nb])))
        np.testing.assert_allclose(sims_to_pick, want_s, atol=1e-5)
    # the approximate (IVF) path, forced by a tiny exact_limit, still finds neighbours this close
    nb_ivf, sc_ivf = nearest_neighbours(ins, enc, exact_limit=10, return_scores=True)
    assert np.all(norm[nb_ivf] != norm)
    assert np.mean(np.isclose(sc_ivf, want_s, atol=1e-5)) >= 0.9


def test_duplicate_groups_spread_and_deterministic():
    enc = HashEncoder()
    ins = ["make the sky blue"] + ["paint the sky blue"] * 50
    a = nearest_neighbours(ins, enc, seed=1)
    b = nearest_neighbours(ins, enc, seed=1)
    np.testing.assert_array_equal(a, b)
    assert np.all(a[1:] == 0)  # the only other distinct instruction
    assert a[0] >= 1 and len({nearest_neighbours(ins, enc, seed=s)[0] for s in range(20)}) > 3


def test_edge_cases():
    enc = HashEncoder()
    assert nearest_neighbours([], enc).shape == (0,)
    np.testing.assert_array_equal(nearest_neighbours(["same", "same ", " same"], enc), [-1, -1, -1])
    nb, sc = nearest_neighbours(["only"], enc, return_scores=True)
    assert nb.tolist() == [-1] and np.isnan(sc[0])
    with pytest.raises(XPromptError, match="empty"):
        nearest_neighbours(["ok", " "], enc)
    with pytest.raises(XPromptError, match="list of instructions"):
        nearest_neighbours("just one string", enc)


def test_op_encoder_pairs_by_direction():
    """With the opt-in ``minilm+op`` encoder and with the default ``minilm-edit`` each instruction's neighbour
    has the same edit direction; plain ``minilm`` pairs "Remove the noise" with "Add Gaussian noise"
    (docs/retrieval.md)."""
    ins = [
        "Remove the noise from the image.",
        "Denoise this grainy photo.",
        "Add Gaussian noise to the image.",
        "Make the picture noisy and grainy.",
    ]
    assert nearest_neighbours(ins, "minilm+op").tolist() == [1, 0, 3, 2]
    assert nearest_neighbours(ins).tolist() == [1, 0, 3, 2]  # the default encoder, minilm-edit
    assert nearest_neighbours(ins, "minilm").tolist() == [2, 3, 0, 1]
    more = [
        "Remove the rain from the photo.",
        "Get rid of the rain streaks.",
        "Add rain to the picture.",
        "Make it rain in this shot.",
        "Make the tree bigger.",
        "Enlarge the tree.",
        "Shrink the tree.",
        "Make the tree smaller.",
    ]
    assert nearest_neighbours(more).tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
