"""Text encoders: interface contract, retrieval quality of ``minilm-edit`` (the default since issue #6),
``minilm`` and ``minilm+op`` on paraphrase sets A-F, the learned encoder's strict loading and training, the
open_clip path (random tiny CLIP saved to tmp, no download) and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.retrieval.encoders import get_encoder, weights_fingerprint

# Instruction paraphrase pairs of the kinds the suite (and MagicBrush) contain. Each pair says the same edit
# in different words; across pairs the edits differ, often only in the object, colour or direction.
# Set A was written first and is adversarial (both directions of rain / noise / blur / brightness are in the
# pool); it was then used to design ``normalize_instruction``. Set B was written afterwards and never tuned on.
PARAPHRASES = [
    ("Remove the red circle.", "Delete the red circle from the picture."),
    ("Add a small blue square at the top left.", "Put a little blue square in the upper left corner."),
    ("Make the green triangle yellow.", "Change the colour of the green triangle to yellow."),
    ("Move the purple star to the bottom right.", "Shift the purple star over to the lower right corner."),
    ("Make the orange diamond bigger.", "Enlarge the orange diamond."),
    ("Replace the background with a wooden texture.", "Swap the backdrop for a wood texture."),
    ("Remove the rain from the photo.", "Derain this image."),
    ("Brighten this dark, low-light photo.", "Enhance the underexposed night picture so it is brighter."),
    ("Add heavy rain to the picture.", "Make it look like it is raining hard."),
    ("Make the image darker, as if taken at night.", "Turn the picture into a dim low-light shot."),
    ("Remove the noise from the image.", "Denoise this grainy photo."),
    ("Add Gaussian noise to the image.", "Make the picture noisy and grainy."),
    ("Sharpen the blurry image.", "Deblur this photo."),
    ("Blur the whole picture.", "Make the image out of focus."),
    ("Remove the JPEG compression artefacts.", "Clean up the blocky JPEG artifacts."),
    ("Turn this greyscale photo into colour.", "Colorize the black and white image."),
    ("Fill in the grey box.", "Inpaint the masked rectangle."),
    ("Put a hat on the man.", "Give the man a hat to wear."),
    ("Change the cat into a dog.", "Replace the cat with a dog."),
    ("Make the sky look like a sunset.", "Turn the sky into an orange sunset sky."),
    ("Add snow on the ground.", "Cover the ground with snow."),
    ("Remove the people in the background.", "Erase the people standing in the back."),
    ("Make the car red.", "Paint the car red."),
    ("Add a boat on the lake.", "Put a boat in the water of the lake."),
    ("Make the tree bigger.", "Increase the size of the tree."),
    ("Shrink the white circle.", "Make the white circle smaller."),
    ("Add sunglasses to the woman.", "Let the woman wear sunglasses."),
    ("Make it look like a watercolor painting.", "Render the picture in watercolour style."),
    ("Turn day into night.", "Make the scene take place at night instead of during the day."),
    ("Take the pink heart out of the image.", "Get rid of the pink heart."),
    ("Increase the resolution of this image.", "Upscale the low-resolution picture."),
    ("Put flowers in the vase.", "Fill the vase with flowers."),
    ("Remove the text from the sign.", "Erase the writing on the sign."),
    ("Make the water frozen.", "Turn the water into ice."),
    ("Add a rainbow in the sky.", "Draw a rainbow across the sky."),
]

# Set B: held out (written after the normaliser; not tuned on).
PARAPHRASES_B = [
    ("Add a large green circle in the centre.", "Place a big green circle in the middle of the image."),
    ("Delete the small yellow triangle at the top.", "Erase the little yellow triangle near the top edge."),
    ("Recolour the blue star orange.", "Paint the blue star orange."),
    ("Move the black square to the right side.", "Relocate the black square to the right."),
    ("Make the red heart tiny.", "Scale the red heart down so it is very small."),
    ("Use a striped background.", "Replace the backdrop with stripes."),
    ("Dehaze the foggy landscape.", "Remove the fog from the landscape photo."),
    ("Restore the missing colours of this old photo.", "Colorise this old monochrome photograph."),
    ("Let there be a dog sitting on the bench.", "Add a dog on the bench."),
    ("Make the woman's hair blonde.", "Change the woman's hair color to blonde."),
    ("Replace the apples with oranges.", "Turn the apples into oranges."),
    ("Remove the car from the street.", "Take the car off the road."),
    ("Make the grass brown and dry.", "Turn the green grass into dry brown grass."),
    ("Add a window to the wall.", "Put a window in the wall."),
    ("Make the man smile.", "Give the man a smiling face."),
    ("Change the season to autumn.", "Make it look like fall with orange leaves."),
    ("Add clouds to the clear sky.", "Put some clouds in the sky."),
    ("Make the photo look like a pencil sketch.", "Convert the image into a pencil drawing."),
    ("Remove the watermark.", "Get rid of the watermark on the image."),
    ("Put a cake on the table.", "Add a cake on top of the table."),
    ("Make the room lights turn on.", "Switch on the lights in the room."),
    ("Zoom in on the face.", "Crop the image closer to the face."),
    ("Flip the image horizontally.", "Mirror the picture left to right."),
    ("Rotate the picture by 90 degrees.", "Turn the image a quarter turn."),
    ("Make the building taller.", "Increase the height of the building."),
    ("Turn the photo into an oil painting.", "Render this image as an oil painting."),
    ("Remove the scratches from the old photograph.", "Repair the scratched old photo."),
    ("Estimate the depth of the scene.", "Predict a depth map for this image."),
    ("Segment the objects in the picture.", "Produce a segmentation map of this image."),
    ("Give the horse wings.", "Add wings to the horse."),
]


# Set C: written later still, before a second round of rewriting experiments; evaluated once (held out).
PARAPHRASES_C = [
    ("Add a tiny orange cross at the bottom left.", "Put a small orange X shape in the lower left corner."),
    ("Remove the green diamond.", "Erase the green diamond from the picture."),
    ("Make the yellow circle purple.", "Recolour the yellow circle in purple."),
    ("Move the red triangle to the top.", "Shift the red triangle up to the top edge."),
    ("Make the blue square huge.", "Scale up the blue square a lot."),
    ("Change the background to a brick wall.", "Put a brick texture behind the objects."),
    ("Remove the haze from this photo.", "Make the hazy picture clear."),
    ("Fix the overexposed photo.", "Make the too-bright image darker and balanced."),
    ("Add fog to the landscape.", "Make the scene foggy."),
    ("Reduce the noise in the night shot.", "Clean the grainy night photograph."),
    ("Convert the picture to black and white.", "Remove all the colour from the image."),
    ("Put a cat on the sofa.", "Add a cat sitting on the couch."),
    ("Replace the red car with a bus.", "Turn the red car into a bus."),
    ("Remove the bird from the sky.", "Delete the bird flying in the sky."),
    ("Make the lamp glow.", "Turn the lamp on so it lights up."),
    ("Give the girl a red scarf.", "Add a red scarf around the girl's neck."),
    ("Make the sea stormy.", "Turn the calm sea into big stormy waves."),
    ("Paint the fence white.", "Make the fence white."),
    ("Add a moon to the night sky.", "Put a moon in the dark sky."),
    ("Remove the shadow under the tree.", "Get rid of the tree's shadow."),
    ("Make the photo look like a cartoon.", "Turn the image into a cartoon drawing."),
    ("Make the bread look burnt.", "Burn the toast."),
    ("Put the dog in a field of flowers.", "Change the background behind the dog to a flower meadow."),
    ("Make the old man look younger.", "Make the elderly man appear young."),
    ("Add a reflection of the mountain in the lake.", "Make the lake mirror the mountain."),
    ("Blur the background behind the person.", "Make the background out of focus, keep the person sharp."),
    ("Add graffiti on the wall.", "Spray paint graffiti onto the wall."),
    ("Make the kitchen clean.", "Tidy up the messy kitchen."),
    ("Change the sign to say STOP.", "Write STOP on the sign."),
    ("Make the leaves green again.", "Turn the brown leaves back to green."),
]


# Set D: written for issue #6 BEFORE any direction-aware method was tried (committed before being evaluated);
# methods were tuned on A and B only, and D was evaluated once with the method fixed. Mix: the suite's
# low-level tasks in both directions (haze, noise, rain, blur, brightness, resolution, JPEG), the suite's
# object edits, MagicBrush-style object/attribute edits, and geometric/global edits.
PARAPHRASES_D = [
    ("Add a layer of haze to the photo.", "Make the picture look misty and hazy."),
    ("Clear away the mist in this landscape shot.", "Dehaze the picture."),
    ("Sprinkle some noise over the image.", "Introduce random grain into the picture."),
    ("Get rid of the grainy speckles.", "Make the noisy photo clean and smooth."),
    ("Overlay rain streaks on the image.", "Add falling rain to this photo."),
    ("Take the rain streaks out of the picture.", "Wipe the rain off this photo."),
    ("Make the photo blurry.", "Apply a soft blur filter to the picture."),
    ("Make the blurry photo sharp again.", "Remove the motion blur from this picture."),
    ("Darken the photo so it looks like dusk.", "Lower the brightness of the picture."),
    ("Brighten up the dim photo.", "Increase the exposure of this dark image."),
    ("Reduce the image to half its resolution.", "Make the picture lower resolution and pixelated."),
    ("Make the pixelated image crisp and high resolution.", "Super-resolve this low-res picture."),
    ("Compress the image heavily as a JPEG.", "Add blocky compression artifacts to the photo."),
    ("Remove the blocky compression artifacts.", "Repair the JPEG damage in this image."),
    ("Add a big red square in the middle.", "Place a large red square at the center of the image."),
    ("Remove the small purple circle.", "Erase the little purple circle."),
    ("Change the blue triangle to green.", "Recolor the blue triangle green."),
    ("Move the yellow star to the left.", "Shift the yellow star over to the left side."),
    ("Make the white square larger.", "Scale up the white square."),
    ("Make the orange heart smaller.", "Shrink the orange heart."),
    ("Give the shapes a gray background.", "Change the backdrop behind the shapes to gray."),
    ("Put a green cross at the bottom.", "Add a green X near the bottom edge."),
    ("Add a dog next to the girl.", "Put a dog beside the girl."),
    ("Remove the umbrella from the man's hand.", "Take away the umbrella the man is holding."),
    ("Make the shirt blue.", "Change the color of the shirt to blue."),
    ("Turn the cake into a pizza.", "Replace the cake with a pizza."),
    ("Put a crown on the king's head.", "Let the king wear a crown."),
    ("Make the flowers pink.", "Change the flowers to pink ones."),
    ("Add a clock on the wall.", "Hang a clock on the wall."),
    ("Remove the cup from the table.", "Take the cup off the table."),
    ("Make the sky stormy and dark.", "Fill the sky with dark storm clouds."),
    ("Turn the horse into a zebra.", "Give the horse zebra stripes."),
    ("Give the boy a backpack.", "Add a backpack on the boy's back."),
    ("Make the house look abandoned.", "Turn the house into an old, run-down ruin."),
    ("Render the image in the style of Van Gogh.", "Make the picture look like a Van Gogh painting."),
    ("Remove the fence.", "Delete the fence from the scene."),
    ("Make the apple green.", "Paint the apple green."),
    ("Add a candle on the cake.", "Put a lit candle on top of the cake."),
    ("Rotate the image 180 degrees.", "Turn the picture upside down."),
    ("Flip the picture vertically.", "Mirror the image top to bottom."),
    ("Rotate the image slightly, by about 15 degrees.", "Tilt the picture a little."),
    ("Crop the image to the left half.", "Keep only the left half of the picture."),
    ("Zoom out so more of the scene is visible.", "Widen the view to show more around the edges."),
    ("Shift the whole image up a bit.", "Translate the picture upward slightly."),
    ("Stretch the image horizontally.", "Make the picture wider without changing its height."),
    ("Add a red border around the image.", "Frame the picture with a red border."),
    ("Convert the picture to sepia.", "Give the photo an old brownish sepia tone."),
    ("Invert the colors of the image.", "Make a color negative of the picture."),
]


# Set E: written after D had been evaluated (for a possible second round of methods, which may use A, B, C
# and D as development data); committed before any second-round method was tried. Same mix as D.
PARAPHRASES_E = [
    ("Give the photo a foggy look.", "Fill the scene with a light fog."),
    ("Lift the fog from this scene.", "Make the foggy photo clear again."),
    ("Add speckled noise to the picture.", "Corrupt the photo with random noise."),
    ("Reduce the grain in this photograph.", "Smooth out the noise in this picture."),
    ("Make it look like a rainy day.", "Add raindrops falling across the image."),
    ("Remove the raindrops from the photo.", "Make the rainy picture look dry and clear."),
    ("Soften the image with a blur.", "Make everything in the picture fuzzy."),
    ("Sharpen the out-of-focus photo.", "Restore the fine details of this blurred image."),
    ("Make the photo look like it was shot at night.", "Lower the light level so the image looks dark."),
    ("Make the dark photo brighter.", "Fix the underexposure in this image."),
    ("Downscale the image to a quarter of its size.", "Make the picture coarse and low resolution."),
    ("Upsample the image to twice the resolution.", "Restore the detail of this pixelated picture."),
    ("Save the photo with strong JPEG compression.", "Make the picture look heavily compressed and blocky."),
    ("Undo the JPEG compression artifacts.", "Clean the blocky compression noise out of the image."),
    ("Insert a small cyan circle at the top right.", "Draw a little cyan circle in the upper right corner."),
    ("Delete the black triangle.", "Take the black triangle out of the image."),
    ("Turn the pink square purple.", "Recolour the pink square in purple."),
    ("Move the green diamond to the bottom.", "Drag the green diamond down to the bottom edge."),
    ("Make the red cross larger.", "Enlarge the red cross."),
    ("Make the cyan star tiny.", "Reduce the cyan star to a very small size."),
    ("Use a checkered background.", "Replace the background with a checkerboard pattern."),
    ("Remove the white heart at the top.", "Erase the white heart near the top."),
    ("Add a bicycle leaning against the wall.", "Put a bike against the wall."),
    ("Remove the lamp post.", "Take out the street lamp."),
    ("Make the dress red.", "Change the dress color to red."),
    ("Turn the bananas into pineapples.", "Replace the bananas with pineapples."),
    ("Put a bow tie on the man.", "Give the man a bow tie."),
    ("Add a snowman in the yard.", "Put a snowman in the garden."),
    ("Remove the clouds from the sky.", "Make the sky completely clear."),
    ("Change the wall color to yellow.", "Paint the walls yellow."),
    ("Make the cat sleep.", "Show the cat sleeping."),
    ("Add a steaming cup of coffee on the desk.", "Put a hot coffee cup on the desk."),
    ("Give the boy a skateboard.", "Add a skateboard under the boy's feet."),
    ("Make the trees bare.", "Remove all the leaves from the trees."),
    ("Turn the painting into a mosaic.", "Render the image as a tile mosaic."),
    ("Make the car look old and rusty.", "Add rust to the car."),
    ("Replace the sandwich with a burger.", "Swap the sandwich for a hamburger."),
    ("Rotate the picture 45 degrees.", "Turn the image diagonally by 45 degrees."),
    ("Crop out the bottom third of the image.", "Cut away the lower third of the picture."),
    ("Zoom into the center of the image.", "Enlarge the middle part of the picture."),
    ("Move the whole picture to the right.", "Shift the image content rightwards."),
    ("Squash the image vertically.", "Make the picture shorter without changing its width."),
    ("Add a white margin around the picture.", "Pad the image with a white frame."),
    ("Tile the image twice side by side.", "Repeat the picture two times horizontally."),
    ("Swap the left and right halves of the image.", "Exchange the two halves of the picture."),
    ("Increase the contrast.", "Make the image more contrasty."),
    ("Make the colors more saturated.", "Boost the color saturation of the photo."),
    ("Give the photo a cold blue tint.", "Make the picture look bluish and cold."),
]


_EMB: dict[tuple[str, str], np.ndarray] = {}  # (encoder version, text) -> embedding: pools share texts


def rank1_rate(encoder, pairs) -> tuple[float, list]:
    """Fraction of the 2N texts whose nearest other text is their partner; and the misses."""
    texts = [t for pair in pairs for t in pair]
    partner = np.array([i ^ 1 for i in range(len(texts))])  # 0<->1, 2<->3, ...
    new = [t for t in dict.fromkeys(texts) if (encoder.version, t) not in _EMB]
    if new:
        _EMB.update(((encoder.version, t), e) for t, e in zip(new, encoder.encode(new), strict=True))
    v = np.stack([_EMB[encoder.version, t] for t in texts])  # (2N, D)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    hit = sims.argmax(1) == partner
    return float(hit.mean()), [(texts[i], texts[sims[i].argmax()]) for i in np.flatnonzero(~hit)]


def assert_floors(encoder, floors) -> None:
    """Every ``(pairs, floor)``: the rank-1 rate of ``encoder`` on ``pairs`` is at least ``floor``."""
    for pairs, floor in floors:
        rate, misses = rank1_rate(encoder, pairs)
        assert rate >= floor, f"{len(pairs)} pairs: rank-1 rate {rate:.3f} < {floor}; misses: {misses}"


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


def test_minilm_contract(minilm):
    v = minilm.encode(
        ["Remove the red circle.", "Add rain", "x" * 3000]
    )  # long input is truncated, not refused
    assert v.shape == (3, 384) and v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dim == 384 and len(minilm.version.split("+")[0]) == 16
    # batching and input order do not change the result
    texts = [f"Move the {c} square to the left" for c in ("red", "green", "blue")] + ["Derain this image."]
    a = minilm.encode(texts, batch_size=2)
    b = minilm.encode(texts[::-1], batch_size=64)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    assert get_encoder("minilm") is minilm  # cached per process


ALL_SETS = PARAPHRASES + PARAPHRASES_B + PARAPHRASES_C + PARAPHRASES_D + PARAPHRASES_E


def test_minilm_paraphrase_retrieval_rank1(minilm):
    """Retrieval quality of ``minilm`` (the default before issue #6) on 255 paraphrase pairs: each text is
    searched among the other texts of its pool; a hit is its partner at rank 1. Measured (raw MiniLM -> with
    rewriting, ``minilm``): A 0.800 -> 0.886, B 0.867 -> 0.883, C 1.000 -> 1.000, pool A+B+C (190 texts)
    0.779 -> 0.832; with rewriting: D 0.677, E 0.625, F (64 pairs, tests/data) 0.586, pool A..E (382 texts)
    0.618, pool A..F (510 texts) 0.563. The issue's 0.90 holds on C only (misses: an operation vs its inverse,
    geometric edits, and in big pools other pairs of the same operation; docs/retrieval.md). Guards these."""
    assert len(ALL_SETS) == 191 and len(F_SET) == 64
    assert_floors(
        minilm,
        (
            (PARAPHRASES_C, 0.95),
            (PARAPHRASES_B, 0.85),
            (PARAPHRASES, 0.85),
            (PARAPHRASES_D, 0.65),
            (PARAPHRASES_E, 0.60),
            (F_SET, 0.55),
            (PARAPHRASES + PARAPHRASES_B + PARAPHRASES_C, 0.80),
            (ALL_SETS, 0.60),
            (ALL_SETS + F_SET, 0.53),
        ),
    )


@pytest.fixture(scope="module")
def minilm_op():
    return get_encoder("minilm+op")


def test_op_features_paraphrase_retrieval_rank1(minilm, minilm_op):
    """The opt-in ``minilm+op`` (edit direction + operation concept features, filler nouns dropped), designed
    on A-D and frozen before E was first evaluated. Measured (default -> minilm+op): A 0.886 -> 0.971,
    B 0.883 -> 0.967, C 1.000 -> 0.983, D 0.677 -> 0.844 (D was development data for this variant; its clean
    first evaluation was 0.677 -> 0.760 with the direction feature alone), E (held out) 0.625 -> 0.688,
    F 0.586 -> 0.664, pool A+B+C 0.832 -> 0.884, pool A..E 0.618 -> 0.657, A..F 0.563 -> 0.600. Better, but
    not the issue's 0.90 on held-out data, so it is not the default. Guards these levels and that it beats
    ``minilm`` on D, E and F."""
    assert_floors(
        minilm_op,
        (
            (PARAPHRASES, 0.95),
            (PARAPHRASES_B, 0.95),
            (PARAPHRASES_C, 0.95),
            (PARAPHRASES_D, 0.82),
            (PARAPHRASES_E, 0.66),
            (F_SET, 0.63),
            (PARAPHRASES + PARAPHRASES_B + PARAPHRASES_C, 0.86),
            (ALL_SETS, 0.64),
            (ALL_SETS + F_SET, 0.57),
        ),
    )
    for pairs in (PARAPHRASES_D, PARAPHRASES_E, F_SET):
        assert rank1_rate(minilm_op, pairs)[0] > rank1_rate(minilm, pairs)[0]


def test_op_features_geometry(minilm, minilm_op):
    from xprompt.retrieval.encoders import OP_DIMS, drop_filler, edit_concepts, edit_direction, op_features

    assert [
        edit_direction(t)
        for t in (
            "Add Gaussian noise to the image.",
            "Denoise this grainy photo.",
            "Make the picture noisy and grainy.",
            "Sharpen the blurry image.",
            "Make the car red.",
            "Derain it",
            "Put a hat on the man.",
        )
    ] == [1, -1, 1, -1, 0, -1, 1]
    assert edit_concepts("Remove the JPEG artefacts from this dark photo") == ["light", "jpeg"]
    assert edit_concepts("Make the car red.") == []
    assert (
        drop_filler("Derain this image.") == "remove the rain." and drop_filler("The image.") == "the image."
    )
    f = op_features(
        ["Add rain", "Remove the rain", "Make the car red", "Flip it"], (0.2, 0.3)
    )  # (4, OP_DIMS)
    assert f.shape == (4, OP_DIMS) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f[:, :2], axis=1), np.sqrt(0.2), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f[:, 2:], axis=1), np.sqrt(0.3), rtol=1e-6)
    g = f @ f.T
    assert abs(g[0, 1] - 0.3) < 1e-6  # same concept (rain), opposite directions: only the concept bonus
    assert abs(g[2, 3] - 0.2) < 1e-6  # both directions unknown (full bonus), no shared concept
    # the encoder: unit rows, 384 + OP_DIMS wide, a version and spec that tell its stores apart
    v = minilm_op.encode(
        ["Remove the noise from the image.", "Add Gaussian noise to the image.", "Denoise this grainy photo."]
    )
    assert v.shape == (3, 384 + OP_DIMS) and v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert minilm_op.dim == 384 + OP_DIMS and minilm_op.spec == "minilm+op"
    assert minilm_op.version.startswith(minilm.version + "+op1") and minilm_op.version != minilm.version
    assert v[0] @ v[2] > v[0] @ v[1]  # the direction separates "remove noise" from "add noise"
    w = minilm.encode(
        ["Remove the noise from the image.", "Add Gaussian noise to the image.", "Denoise this grainy photo."]
    )
    assert w[0] @ w[2] < w[0] @ w[1]  # ... which the default encoder gets wrong


def test_normalisation_helps_on_jargon(minilm):
    from xprompt.retrieval.encoders import MiniLMEncoder, normalize_instruction

    assert normalize_instruction("Derain this image.") == "remove the rain from this image."
    assert normalize_instruction("Colourise the greyscale photo") == "add color to the black and white photo"
    assert normalize_instruction("Decolorize it") == "remove the color from it"
    raw = MiniLMEncoder(normalize=False)
    assert raw.version != minilm.version  # stores built with / without the rewrite are told apart
    pool = [
        "Derain this image.",
        "Remove the rain from the photo.",
        "Deblur this photo.",
        "Denoise the picture.",
    ]
    for enc, want in ((minilm, 1), (raw, 2)):
        v = enc.encode(pool)
        assert int(np.argmax(v[1:] @ v[0])) + 1 == want


@pytest.mark.parametrize("bad", [[""], ["   "], ["ok", "\t\n"], [None]])
def test_bad_instructions(minilm, bad):
    with pytest.raises(XPromptError, match="empty|expected a string"):
        minilm.encode(bad)


def test_bad_specs(tmp_path):
    with pytest.raises(XPromptError, match="unknown encoder"):
        get_encoder("bert")
    with pytest.raises(XPromptError, match="openclip:ARCH:WEIGHTS"):
        get_encoder("openclip:ViT-B-32")
    with pytest.raises(XPromptError, match="not found.*nothing is downloaded"):
        get_encoder(f"openclip:ViT-B-32:{tmp_path / 'missing.safetensors'}")


# ---------------------------------------------------------------------------------------------- open_clip
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised tiny CLIP registered with open_clip, weights saved as .safetensors and .bin."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("clip")
    (d / "xp-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(d / "xp-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("xp-tiny-clip", pretrained=None, load_weights=False).eval()
    save_file(model.state_dict(), str(d / "w.safetensors"))
    torch.save(model.state_dict(), d / "w.bin")
    return model, d


@pytest.mark.parametrize("fname", ["w.safetensors", "w.bin"])
def test_openclip_matches_reference(tiny_clip, fname):
    import open_clip
    import torch

    model, d = tiny_clip
    enc = get_encoder(f"openclip:xp-tiny-clip:{d / fname}", cache=False)
    texts = ["a red circle", "add rain to the image"]
    v = enc.encode(texts)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(
            model.encode_text(open_clip.get_tokenizer("xp-tiny-clip")(texts)), dim=-1
        )
    np.testing.assert_allclose(v, ref.numpy(), atol=1e-5)
    assert v.shape == (2, 32) and enc.dim == 32 and enc.name == "openclip:xp-tiny-clip"
    assert enc.version == weights_fingerprint(d / fname)
    img = enc.encode_images([np.zeros((40, 50, 3), np.uint8), np.full((32, 32, 3), 200, np.uint8)])
    assert img.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)


def test_openclip_bad_weights(tiny_clip, tmp_path):
    _, d = tiny_clip
    (tmp_path / "garbage.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(XPromptError, match="cannot load CLIP weights"):
        get_encoder(f"openclip:xp-tiny-clip:{tmp_path / 'garbage.bin'}", cache=False)
    with pytest.raises(XPromptError, match="cannot load CLIP weights"):  # right file, wrong architecture
        get_encoder(f"openclip:RN50:{d / 'w.safetensors'}", cache=False)
    with pytest.raises(XPromptError, match="unknown open_clip architecture"):
        get_encoder(f"openclip:NoSuchArch:{d / 'w.bin'}", cache=False)


@pytest.mark.parametrize("spec, floor", [("minilm", 0.9), ("minilm+op", 0.95), ("minilm-edit", 0.97)])
def test_suite_task_retrieval_accuracy(spec, floor):
    """RAIE on the task suite: the top-1 stored instruction (320 suite edit/low-level/degrade instructions) has
    the query's task for held-out instructions (other seed). Measured at 320 / 120: minilm 0.925, minilm+op
    0.975, minilm-edit 0.992; at 1,024 stored / 600 queries: 0.960, 0.972 and 0.993 (the op lexicons drew on
    the suite's templates; minilm-edit was trained on the suite's paraphrases, other instances)."""
    from xprompt.retrieval.sources import suite_tasks

    enc = get_encoder(spec)
    tasks = suite_tasks(["edit", "lowlevel", "degrade"])

    def gen(n, seed):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            t = tasks[i % len(tasks)]
            out.append((t.instruction(t.sample_params(rng), rng), t.name))
        return out

    db, queries = gen(320, 0), gen(120, 1)
    vb = enc.encode([x for x, _ in db])
    vq = enc.encode([x for x, _ in queries])
    top = (vq @ vb.T).argmax(1)
    acc = np.mean([db[j][1] == queries[i][1] for i, j in enumerate(top)])
    assert acc >= floor, acc


# ---------------------------------------------------------------------------------------------- minilm-edit
F_PATH = Path(__file__).parent / "data" / "paraphrases_f.json"


def load_pairs(path) -> list[tuple[str, str]]:
    """Paraphrase pairs from JSON: a list of [a, b] pairs or of {"a": .., "b": ..} objects, or an object holding
    such a list under "pairs"."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data["pairs"]
    pairs = [
        tuple(p) if isinstance(p, list) else tuple(v for v in p.values() if isinstance(v, str))[:2]
        for p in data
    ]
    assert pairs and all(len(p) == 2 and all(isinstance(t, str) and t.strip() for t in p) for p in pairs)
    return pairs


F_SET = load_pairs(F_PATH)


@pytest.fixture(scope="module")
def minilm_edit():
    return get_encoder("minilm-edit")


def test_minilm_edit_paraphrase_retrieval_rank1(minilm, minilm_edit):
    """``minilm-edit``, the default encoder since issue #6 (docs/retrieval.md). Trained on a generated corpus
    only; A-D were development sets (choice among 5 training runs), E was evaluated twice (mid-way 0.958 on
    an earlier run, final 0.948; its wording was visible while the grammar was written, near-copies filtered
    out), F (tests/data, written independently) was opened and evaluated once with the weights frozen.
    Measured: A 0.943, B 0.983, C 0.983, D 0.927, E 0.948, F 0.914, pool A+B+C 0.937, A..E 0.751, A..F 0.710.
    Guards these levels (a little below), the issue's 0.90 on E and F, and the gain over ``minilm``."""
    assert_floors(
        minilm_edit,
        (
            (PARAPHRASES, 0.92),
            (PARAPHRASES_B, 0.95),
            (PARAPHRASES_C, 0.95),
            (PARAPHRASES_D, 0.90),
            (PARAPHRASES_E, 0.92),
            (F_SET, 0.90),
            (PARAPHRASES + PARAPHRASES_B + PARAPHRASES_C, 0.91),
            (ALL_SETS, 0.72),
            (ALL_SETS + F_SET, 0.68),
        ),
    )
    for pairs in (PARAPHRASES_D, PARAPHRASES_E, F_SET, ALL_SETS + F_SET):
        assert rank1_rate(minilm_edit, pairs)[0] > rank1_rate(minilm, pairs)[0] + 0.05


def test_default_encoder_is_minilm_edit(minilm_edit):
    from xprompt.retrieval.encoders import DEFAULT_ENCODER

    assert DEFAULT_ENCODER == "minilm-edit" and get_encoder() is minilm_edit


def test_minilm_edit_contract(minilm, minilm_edit):
    from xprompt.retrieval.encoders import edit_checkpoint

    v = minilm_edit.encode(
        ["Remove the noise from the image.", "Add Gaussian noise to the image.", "Denoise this grainy photo."]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert minilm_edit.spec == "minilm-edit" and minilm_edit.dim == 384
    fp = weights_fingerprint(edit_checkpoint() / "model.safetensors")
    assert minilm_edit.version == f"{minilm.version}+edit{fp}"  # base + rewriting + the trained layers
    assert v[0] @ v[2] > v[0] @ v[1]  # the learned encoder separates "remove noise" from "add noise"
    size = (edit_checkpoint() / "model.safetensors").stat().st_size
    assert size <= 10 * 2**20, f"shipped minilm-edit weights are {size} bytes (> 10 MiB)"
