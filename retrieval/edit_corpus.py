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
* Deterministic in ``seed`` (one ``numpy`` Generator). ``exclude`` drops every triple containing one of the
  given texts (compared lower-cased without punctuation): the paraphrase test sets are never trained on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

CORPUS_VERSION = "c1"

IMG = [
    "the image",
    "this image",
    "the photo",
    "this photo",
    "the picture",
    "this picture",
    "the scene",
    "this shot",
    "the photograph",
    "it",
]
NOUN = ["image", "photo", "picture", "shot", "photograph", "scene"]
COLORS = [
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "white",
    "black",
    "gray",
    "brown",
    "cyan",
    "magenta",
    "teal",
    "gold",
    "silver",
    "navy",
    "beige",
    "turquoise",
    "violet",
    "maroon",
    "lime",
]
SHAPES = [
    "circle",
    "square",
    "triangle",
    "star",
    "diamond",
    "heart",
    "cross",
    "hexagon",
    "pentagon",
    "rectangle",
    "ellipse",
    "ring",
    "arrow",
    "crescent",
]
SIZES = ["small", "large", "tiny", "big", "little", "huge", "medium-sized"]
OBJECTS = [
    "dog",
    "cat",
    "horse",
    "bird",
    "car",
    "bus",
    "truck",
    "bicycle",
    "motorcycle",
    "boat",
    "tree",
    "lamp",
    "chair",
    "table",
    "cup",
    "mug",
    "vase",
    "book",
    "clock",
    "umbrella",
    "bench",
    "fence",
    "house",
    "tower",
    "bridge",
    "kite",
    "balloon",
    "ball",
    "pumpkin",
    "apple",
    "banana",
    "orange",
    "cake",
    "pizza",
    "sandwich",
    "bottle",
    "laptop",
    "phone",
    "television",
    "sofa",
    "bed",
    "window",
    "door",
    "painting",
    "plant",
    "flower pot",
    "cow",
    "sheep",
    "duck",
    "elephant",
    "giraffe",
    "bear",
    "rabbit",
    "fish",
    "airplane",
    "train",
    "traffic light",
    "stop sign",
    "mailbox",
    "statue",
    "fountain",
    "candle",
    "guitar",
    "teddy bear",
    "basket",
    "suitcase",
    "helicopter",
    "tent",
    "rock",
]
PEOPLE = [
    "man",
    "woman",
    "girl",
    "boy",
    "child",
    "old man",
    "old woman",
    "baby",
    "person",
    "lady",
    "skier",
    "surfer",
    "chef",
    "soldier",
    "teacher",
    "player",
    "king",
    "queen",
]
ACCESSORIES = [
    "hat",
    "pair of sunglasses",
    "scarf",
    "necklace",
    "crown",
    "backpack",
    "tie",
    "pair of glasses",
    "mask",
    "helmet",
    "watch",
    "jacket",
    "cap",
    "bow tie",
    "beard",
    "mustache",
    "wig",
    "cape",
    "earring",
    "flower crown",
]
PLACES = [
    "on the table",
    "in the sky",
    "on the wall",
    "on the grass",
    "in the water",
    "on the road",
    "on the bench",
    "next to the house",
    "in the background",
    "on the shelf",
    "in the corner",
    "on the beach",
    "in the field",
    "on the floor",
    "on the roof",
    "by the window",
    "under the tree",
    "on the desk",
    "in the garden",
    "on the sofa",
    "near the door",
    "on the snow",
]
POSITIONS = {  # canonical position -> phrasings
    "top left": ["top left", "upper left", "top-left corner", "upper left corner"],
    "top right": ["top right", "upper right", "top-right corner", "upper right corner"],
    "bottom left": ["bottom left", "lower left", "bottom-left corner", "lower left corner"],
    "bottom right": ["bottom right", "lower right", "bottom-right corner", "lower right corner"],
    "center": ["center", "middle", "centre", "middle of the frame"],
    "top": ["top", "top edge", "upper part"],
    "bottom": ["bottom", "bottom edge", "lower part"],
    "left": ["left", "left side", "left edge"],
    "right": ["right", "right side", "right edge"],
}
BACKGROUNDS = [
    "a brick wall",
    "a wooden texture",
    "a sandy beach",
    "a pine forest",
    "a city skyline",
    "snowy mountains",
    "a starry night sky",
    "a desert",
    "a snowy field",
    "stripes",
    "a checkerboard",
    "a plain blue color",
    "a sunset",
    "an office",
    "a library",
    "a flower meadow",
    "a waterfall",
    "outer space",
    "a marble texture",
    "a gradient from red to yellow",
    "a grass field",
    "the ocean",
]
STYLES = [
    "watercolor painting",
    "oil painting",
    "pencil sketch",
    "cartoon",
    "anime drawing",
    "pixel art image",
    "mosaic",
    "Van Gogh painting",
    "pop art poster",
    "comic book panel",
    "charcoal drawing",
    "ukiyo-e print",
    "impressionist painting",
    "cubist painting",
    "stained glass window",
    "low-poly render",
    "clay figure",
    "neon sign",
    "blueprint",
    "vintage postcard",
    "3D render",
    "crayon drawing",
    "ink drawing",
    "graffiti mural",
    "Monet painting",
    "Picasso painting",
]
ATTRS = [
    ("old", "new"),
    ("wet", "dry"),
    ("broken", "intact"),
    ("dirty", "clean"),
    ("rusty", "shiny"),
    ("frozen", "melted"),
    ("on fire", "untouched by fire"),
    ("glowing", "dull"),
    ("wooden", "metal"),
    ("golden", "plain"),
    ("empty", "full"),
    ("open", "closed"),
    ("happy", "sad"),
    ("young", "old"),
]
SEASONS = {
    "winter": ["winter", "wintertime", "a snowy winter"],
    "summer": ["summer", "summertime", "high summer"],
    "autumn": ["autumn", "fall", "the fall season"],
    "spring": ["spring", "springtime", "early spring"],
}
WORDS = ["STOP", "HELLO", "OPEN", "SALE", "EXIT", "CAFE", "WELCOME", "LOVE"]

# ---------------------------------------------------------------------------------------------- low level
# concept -> (restore / remove templates, degrade / add templates); {img} filler, {n} a noun
LOWLEVEL = {
    "rain": (
        [
            "Remove the rain from {img}.",
            "Derain {img}.",
            "Get rid of the rain streaks in {img}.",
            "Erase the rain.",
            "Take away the rain streaks.",
            "Undo the rain effect in {img}.",
            "Eliminate the rain from {img}.",
            "Clear the rain out of {img}.",
            "Wipe away the rain streaks.",
            "Strip out the falling rain.",
            "Make the rainy {n} rain-free.",
            "Clean the raindrops off {img}.",
            "Restore {img} without the rain.",
            "Rain removal for {img}.",
        ],
        [
            "Add rain to {img}.",
            "Make it rain in {img}.",
            "Simulate rainfall on {img}.",
            "Put falling rain over {img}.",
            "Give {img} a rainy look.",
            "Add a downpour to {img}.",
            "Make the weather rainy.",
            "Cover {img} with rain streaks.",
            "Render rain falling across {img}.",
            "Create a rainy version of {img}.",
            "Add streaks of rain.",
            "Turn {img} into a rainy scene.",
            "Make {img} look like it's pouring rain.",
            "Introduce rain into {img}.",
        ],
    ),
    "noise": (
        [
            "Remove the noise from {img}.",
            "Denoise {img}.",
            "Clean up the noisy {n}.",
            "Get rid of the noise.",
            "Reduce the noise in {img}.",
            "Make the grainy {n} smooth.",
            "Suppress the grain in {img}.",
            "Clear the speckles out of {img}.",
            "Eliminate the sensor noise.",
            "Remove the grain.",
            "Make the noisy {n} clean.",
            "Filter out the noise in {img}.",
            "Noise reduction for {img}.",
        ],
        [
            "Add noise to {img}.",
            "Make {img} noisy.",
            "Make the {n} grainy.",
            "Add Gaussian noise.",
            "Corrupt {img} with noise.",
            "Put grain on {img}.",
            "Add film grain to {img}.",
            "Sprinkle random speckles over {img}.",
            "Simulate sensor noise in {img}.",
            "Make {img} speckled.",
            "Degrade {img} with random noise.",
            "Add static noise to {img}.",
            "Introduce noise into {img}.",
        ],
    ),
    "blur": (
        [
            "Deblur {img}.",
            "Sharpen the blurry {n}.",
            "Remove the blur from {img}.",
            "Make the {n} sharp.",
            "Bring {img} into focus.",
            "Fix the out-of-focus {n}.",
            "Make the blurred {n} crisp.",
            "Undo the blur.",
            "Restore the sharpness of {img}.",
            "Get rid of the motion blur.",
            "Make the fuzzy {n} clear and sharp.",
            "Refocus {img}.",
            "Increase the sharpness of {img}.",
        ],
        [
            "Blur {img}.",
            "Make {img} blurry.",
            "Apply a Gaussian blur to {img}.",
            "Put {img} out of focus.",
            "Defocus {img}.",
            "Add motion blur to {img}.",
            "Make the {n} fuzzy.",
            "Smear {img} with a blur.",
            "Make the {n} soft and unfocused.",
            "Reduce the sharpness of {img}.",
            "Apply a strong blur filter.",
            "Give {img} a blurred look.",
        ],
    ),
    "haze": (
        [
            "Dehaze {img}.",
            "Remove the haze from {img}.",
            "Remove the fog.",
            "Clear the mist from {img}.",
            "Make the hazy {n} clear.",
            "Get rid of the fog in {img}.",
            "Cut through the haze.",
            "Eliminate the haze.",
            "Make the foggy {n} crisp and clear.",
            "Take the mist out of {img}.",
            "Defog {img}.",
            "Restore visibility in the hazy {n}.",
        ],
        [
            "Add haze to {img}.",
            "Make {img} foggy.",
            "Add fog to {img}.",
            "Cover {img} in mist.",
            "Make the {n} hazy.",
            "Simulate fog in {img}.",
            "Put a layer of mist over {img}.",
            "Make {img} misty.",
            "Add thick fog.",
            "Give {img} a hazy atmosphere.",
            "Fill {img} with haze.",
            "Make it look like a foggy morning.",
        ],
    ),
    "light": (
        [
            "Brighten {img}.",
            "Make the dark {n} brighter.",
            "Enhance the low-light {n}.",
            "Fix the underexposed {n}.",
            "Increase the brightness of {img}.",
            "Lighten {img}.",
            "Make {img} lighter.",
            "Boost the exposure of {img}.",
            "Make the dim {n} bright.",
            "Light up the dark {n}.",
            "Correct the underexposure.",
            "Raise the brightness.",
        ],
        [
            "Darken {img}.",
            "Make {img} darker.",
            "Make the {n} look underexposed.",
            "Lower the brightness of {img}.",
            "Reduce the exposure.",
            "Make {img} dim.",
            "Make it look like night.",
            "Turn down the brightness.",
            "Make the {n} look like it was taken at dusk.",
            "Decrease the brightness of {img}.",
            "Make the {n} gloomy and dark.",
            "Underexpose {img}.",
        ],
    ),
    "resolution": (
        [
            "Upscale {img}.",
            "Super-resolve {img}.",
            "Increase the resolution of {img}.",
            "Make the pixelated {n} high resolution.",
            "Enhance the resolution.",
            "Recover the fine detail of the low-resolution {n}.",
            "Sharpen up the low-res {n}.",
            "Turn the low-res {n} into a high-res one.",
            "Make the blocky pixels smooth and detailed.",
            "Upsample {img}.",
            "Double the resolution of {img}.",
        ],
        [
            "Downsample {img}.",
            "Lower the resolution of {img}.",
            "Make {img} pixelated.",
            "Reduce the resolution.",
            "Make the {n} low resolution.",
            "Pixelate {img}.",
            "Downscale {img}.",
            "Make {img} look low-res.",
            "Shrink the resolution of {img}.",
            "Halve the resolution of {img}.",
            "Cut the pixel count of {img}.",
        ],
    ),
    "jpeg": (
        [
            "Remove the JPEG artifacts.",
            "Restore the compressed {n}.",
            "Fix the compression artifacts.",
            "Clean up the JPEG blocks.",
            "Get rid of the blocky artifacts.",
            "Repair the JPEG damage.",
            "Remove the compression blocks from {img}.",
            "Undo the JPEG compression.",
            "Deblock {img}.",
            "Smooth out the compression artifacts.",
        ],
        [
            "Compress {img} as JPEG.",
            "Add JPEG artifacts.",
            "Save {img} at low quality.",
            "Make {img} blocky like a heavily compressed JPEG.",
            "Apply strong JPEG compression.",
            "Add compression artifacts to {img}.",
            "Degrade {img} with JPEG compression.",
            "Make the {n} look badly compressed.",
            "Lower the JPEG quality.",
            "Introduce blocky artifacts.",
        ],
    ),
    "color": (
        [
            "Colorize {img}.",
            "Add color to the black and white {n}.",
            "Restore the colors.",
            "Turn the grayscale {n} into color.",
            "Bring color back to {img}.",
            "Give the monochrome {n} color.",
            "Make the black and white {n} colorful.",
            "Put realistic colors into the gray {n}.",
        ],
        [
            "Convert {img} to black and white.",
            "Make {img} grayscale.",
            "Remove the color from {img}.",
            "Desaturate {img} completely.",
            "Turn {img} monochrome.",
            "Drain all the color from {img}.",
            "Make the {n} black and white.",
            "Turn the {n} into a grayscale one.",
        ],
    ),
    "snow": (
        [
            "Remove the snow from {img}.",
            "Get rid of the falling snow.",
            "Clear the snowflakes out of {img}.",
            "Erase the snow.",
            "Make the snowy {n} snow-free.",
            "Take away the snowfall.",
        ],
        [
            "Add snow to {img}.",
            "Make it snow.",
            "Add falling snowflakes.",
            "Cover {img} in snow.",
            "Make the {n} snowy.",
            "Simulate a snowfall in {img}.",
        ],
    ),
    "inpaint": (
        [
            "Fill in the missing region.",
            "Inpaint {img}.",
            "Fill in the masked area.",
            "Complete the hidden part of {img}.",
            "Restore what is behind the gray box.",
            "Fill the hole in {img}.",
        ],
        [
            "Mask out a region of {img}.",
            "Cover part of {img} with a gray box.",
            "Cut a hole in {img}.",
            "Blank out a rectangle of {img}.",
            "Hide part of {img} behind a gray patch.",
        ],
    ),
    "scratch": (
        [
            "Remove the scratches from {img}.",
            "Repair the scratched {n}.",
            "Restore the damaged old {n}.",
            "Fix the cracks and scratches.",
            "Clean up the worn {n}.",
        ],
        [
            "Add scratches to {img}.",
            "Make {img} look scratched and worn.",
            "Age {img} with cracks.",
            "Damage the {n} with scratches.",
            "Make the {n} look like a worn old print.",
        ],
    ),
    "contrast": (
        [
            "Boost the contrast of {img}.",
            "Raise the contrast.",
            "Make the darks darker and the lights lighter.",
            "Give {img} punchier contrast.",
            "Strengthen the contrast between light and dark.",
        ],
        [
            "Reduce the contrast.",
            "Make {img} flat and washed out.",
            "Lower the contrast of {img}.",
            "Decrease the contrast.",
            "Make the {n} look dull and low-contrast.",
            "Flatten the contrast.",
        ],
    ),
    "saturation": (
        [
            "Make the colors more vivid.",
            "Increase the saturation of {img}.",
            "Make {img} more colorful.",
            "Intensify the colors.",
            "Make the colors pop.",
        ],
        [
            "Desaturate the colors a bit.",
            "Reduce the saturation.",
            "Make the colors muted.",
            "Lower the saturation of {img}.",
            "Make the colors pale and faded.",
            "Tone down the colors.",
        ],
    ),
    "watermark": (
        [
            "Remove the watermark.",
            "Get rid of the watermark on {img}.",
            "Erase the logo overlay.",
            "Take the watermark off {img}.",
            "Clean the watermark out of {img}.",
        ],
        [
            "Add a watermark to {img}.",
            "Put a logo watermark on {img}.",
            "Stamp a watermark across {img}.",
            "Overlay a semi-transparent watermark.",
            "Mark {img} with a watermark.",
        ],
    ),
    "shadow": (
        [
            "Remove the shadows.",
            "Get rid of the shadow in {img}.",
            "Erase the cast shadows.",
            "Make the shadows disappear.",
        ],
        [
            "Add shadows to {img}.",
            "Cast a shadow across {img}.",
            "Put a dark shadow in {img}.",
            "Add a long shadow.",
        ],
    ),
}

# ---------------------------------------------------------------------------------------------- slot ops
# name -> (templates, the slots that identify the edit); ``{o}`` (an object) is always filled, for surface
# variety, but only names the edit when listed. Slots: o object, p person, a accessory, c colour, c2 second colour,
# pl place, pos position, s style, bg background, b second object, at attribute, se season, w word, k shape
OPS = {
    "add": (
        [
            "Add a {o} {pl}.",
            "Put a {o} {pl}.",
            "Place a {o} {pl}.",
            "Insert a {o} {pl}.",
            "Include a {o} {pl}.",
            "Draw a {o} {pl}.",
            "There should be a {o} {pl}.",
            "Let there be a {o} {pl}.",
            "Show a {o} {pl}.",
            "Paste a {o} {pl}.",
            "Introduce a {o} {pl}.",
            "Make a {o} appear {pl}.",
            "Add one {o} {pl}.",
            "Could you add a {o} {pl}?",
            "Have a {o} {pl}.",
        ],
        ("o", "pl"),
    ),
    "remove": (
        [
            "Remove the {o} {pl}.",
            "Delete the {o} {pl}.",
            "Erase the {o} {pl}.",
            "Get rid of the {o} {pl}.",
            "Take the {o} {pl} out.",
            "Take away the {o} {pl}.",
            "Eliminate the {o} {pl}.",
            "Make the {o} {pl} disappear.",
            "Wipe out the {o} {pl}.",
            "Cut the {o} {pl} out of {img}.",
            "Clear away the {o} {pl}.",
            "Remove the {o} {pl} from {img}.",
            "Delete the {o} {pl} from {img}.",
            "The {o} {pl} should be gone.",
            "Without the {o} {pl}, please.",
        ],
        ("o", "pl"),
    ),
    "replace": (
        [
            "Replace the {o} with a {b}.",
            "Turn the {o} into a {b}.",
            "Swap the {o} for a {b}.",
            "Change the {o} to a {b}.",
            "Make the {o} a {b}.",
            "Substitute a {b} for the {o}.",
            "Transform the {o} into a {b}.",
            "Exchange the {o} for a {b}.",
            "Put a {b} where the {o} is.",
            "The {o} should become a {b}.",
        ],
        ("o", "b"),
    ),
    "recolor": (
        [
            "Make the {o} {c}.",
            "Paint the {o} {c}.",
            "Change the color of the {o} to {c}.",
            "Recolor the {o} {c}.",
            "Turn the {o} {c}.",
            "Color the {o} {c}.",
            "Dye the {o} {c}.",
            "Give the {o} a {c} color.",
            "The {o} should be {c}.",
            "Switch the {o}'s color to {c}.",
            "Recolor the {o} in {c}.",
            "Change the {o} to a {c} one.",
        ],
        ("o", "c"),
    ),
    "bigger": (
        [
            "Make the {o} bigger.",
            "Enlarge the {o}.",
            "Scale up the {o}.",
            "Increase the size of the {o}.",
            "Make the {o} larger.",
            "Blow up the {o}.",
            "Grow the {o}.",
            "Make the {o} huge.",
            "Scale the {o} up so it is large.",
            "The {o} should be bigger.",
        ],
        ("o",),
    ),
    "smaller": (
        [
            "Make the {o} smaller.",
            "Shrink the {o}.",
            "Scale down the {o}.",
            "Reduce the size of the {o}.",
            "Make the {o} tiny.",
            "Make the {o} little.",
            "Scale the {o} down so it is small.",
            "Decrease the {o}'s size.",
            "The {o} should be smaller.",
            "Miniaturize the {o}.",
        ],
        ("o",),
    ),
    "move": (
        [
            "Move the {o} to the {pos}.",
            "Shift the {o} to the {pos}.",
            "Relocate the {o} to the {pos}.",
            "Drag the {o} over to the {pos}.",
            "Put the {o} at the {pos} instead.",
            "Reposition the {o} to the {pos}.",
            "Slide the {o} toward the {pos}.",
            "The {o} should be at the {pos}.",
            "Place the {o} in the {pos} instead.",
        ],
        ("o", "pos"),
    ),
    "wear": (
        [
            "Give the {p} a {a}.",
            "Put a {a} on the {p}.",
            "Let the {p} wear a {a}.",
            "Add a {a} to the {p}.",
            "Dress the {p} in a {a}.",
            "Make the {p} wear a {a}.",
            "The {p} should have a {a}.",
            "Equip the {p} with a {a}.",
        ],
        ("p", "a"),
    ),
    "unwear": (
        [
            "Remove the {a} from the {p}.",
            "Take the {a} off the {p}.",
            "The {p} should not wear a {a}.",
            "Get rid of the {p}'s {a}.",
            "Erase the {a} the {p} is wearing.",
            "Make the {p} lose the {a}.",
        ],
        ("p", "a"),
    ),
    "attr": (
        [
            "Make the {o} look {at}.",
            "Turn the {o} {at}.",
            "Change the {o} so it looks {at}.",
            "Render the {o} as {at}.",
            "The {o} should appear {at}.",
            "Make the {o} {at}.",
        ],
        ("o", "at"),
    ),
    "background": (
        [
            "Replace the background with {bg}.",
            "Change the background to {bg}.",
            "Swap the backdrop for {bg}.",
            "Put {bg} behind the {o}.",
            "Use {bg} as the background.",
            "Set the {o} against {bg}.",
            "Make the background {bg}.",
            "Give {img} a background of {bg}.",
            "Move the {o} in front of {bg}.",
        ],
        ("bg",),
    ),
    "style": (
        [
            "Make it look like a {s}.",
            "Render {img} as a {s}.",
            "Turn {img} into a {s}.",
            "Convert {img} to the style of a {s}.",
            "Redraw {img} as a {s}.",
            "Give {img} the look of a {s}.",
            "Transform the {n} into a {s}.",
            "Restyle {img} as a {s}.",
            "Apply a {s} style to {img}.",
            "Make {img} resemble a {s}.",
        ],
        ("s",),
    ),
    "season": (
        [
            "Change the season to {se}.",
            "Make it look like {se}.",
            "Turn the scene into {se}.",
            "Set the {n} in {se}.",
            "Make {img} look like it was taken in {se}.",
            "Transform the season into {se}.",
        ],
        ("se",),
    ),
    "text": (
        [
            "Write {w} on the sign.",
            "Add the text {w} to the sign.",
            "Make the sign say {w}.",
            "Change the sign to read {w}.",
            "Put the word {w} on the sign.",
            "Label the sign with {w}.",
        ],
        ("w",),
    ),
    "tint": (
        [
            "Give {img} a {c} tint.",
            "Tint {img} {c}.",
            "Add a {c} color cast to {img}.",
            "Make the {n} look {c}-tinted.",
            "Wash {img} in {c}.",
            "Apply a {c} filter to {img}.",
        ],
        ("c",),
    ),
    "border": (
        [
            "Add a {c} border around {img}.",
            "Frame {img} with a {c} border.",
            "Pad {img} with a {c} margin.",
            "Surround the {n} with a {c} frame.",
            "Put a {c} frame around {img}.",
            "Give {img} a {c} edge all around.",
        ],
        ("c",),
    ),
}
INVERSE = {
    "add": "remove",
    "remove": "add",
    "bigger": "smaller",
    "smaller": "bigger",
    "wear": "unwear",
    "unwear": "wear",
}

# ---------------------------------------------------------------------------------------------- geometry
GEOMETRY = {  # op -> templates; ops of a group are each other's hard negatives
    "rot90cw": [
        "Rotate {img} 90 degrees clockwise.",
        "Turn {img} a quarter turn to the right.",
        "Rotate {img} right by 90 degrees.",
        "Give {img} a clockwise quarter turn.",
    ],
    "rot90ccw": [
        "Rotate {img} 90 degrees counterclockwise.",
        "Turn {img} a quarter turn to the left.",
        "Rotate {img} left by 90 degrees.",
        "Give {img} an anticlockwise quarter turn.",
    ],
    "rot180": [
        "Rotate {img} 180 degrees.",
        "Turn {img} upside down.",
        "Rotate {img} by half a turn.",
        "Spin {img} around 180 degrees.",
    ],
    "rotsmall": [
        "Rotate {img} slightly.",
        "Tilt {img} by a few degrees.",
        "Rotate {img} by about 10 degrees.",
        "Give {img} a slight tilt.",
        "Turn {img} a little bit.",
        "Rotate {img} 20 degrees.",
        "Rotate {img} by 5 degrees.",
        "Put {img} at a slight angle.",
    ],
    "rot45": [
        "Tilt {img} 45 degrees.",
        "Rotate {img} an eighth of a turn.",
        "Give {img} a 45-degree rotation.",
    ],
    "fliph": [
        "Flip {img} horizontally.",
        "Mirror {img} left to right.",
        "Flip {img} from left to right.",
        "Make a horizontal mirror image of {img}.",
        "Reflect {img} horizontally.",
    ],
    "flipv": [
        "Flip {img} vertically.",
        "Mirror {img} top to bottom.",
        "Make a vertical mirror image of {img}.",
        "Reflect {img} vertically.",
    ],
    "transpose": [
        "Transpose {img}.",
        "Swap the rows and columns of {img}.",
        "Mirror {img} along its diagonal.",
    ],
    "zoomin": [
        "Zoom in on {img}.",
        "Zoom into the middle of {img}.",
        "Magnify the center of {img}.",
        "Crop in tightly on the subject.",
        "Get a closer view of the center.",
        "Punch in on the center.",
    ],
    "zoomout": [
        "Zoom out.",
        "Zoom out to show more of the scene.",
        "Pull the view back.",
        "Show more of the surroundings.",
        "Make the view wider.",
        "Back the camera away from the subject.",
    ],
    "stretchh": [
        "Stretch {img} horizontally.",
        "Make {img} wider.",
        "Widen {img}.",
        "Stretch the {n} sideways.",
        "Pull {img} out to the sides.",
        "Increase the width of {img}.",
    ],
    "stretchv": [
        "Stretch {img} vertically.",
        "Make {img} taller.",
        "Elongate {img} vertically.",
        "Stretch the {n} upward.",
    ],
    "squashv": [
        "Compress {img} vertically.",
        "Flatten {img} from top to bottom.",
        "Reduce the height of {img}.",
    ],
    "squashh": [
        "Squash {img} horizontally.",
        "Make {img} narrower.",
        "Compress the {n} sideways.",
        "Squeeze {img} from the sides.",
    ],
    "tile": ["Put two copies of {img} next to each other.", "Duplicate {img} side by side."],
    "swaphalves": ["Switch the left half with the right half.", "Trade places between the two halves."],
}
CROPS = ["left half", "right half", "top half", "bottom half", "center", "top left quarter", "bottom third"]
SHIFTS = ["left", "right", "up", "down"]
GEOMETRY_SLOT = {
    "crop": (
        [
            "Crop {img} to the {r}.",
            "Keep only the {r} of {img}.",
            "Cut {img} down to the {r}.",
            "Trim everything except the {r}.",
            "Crop out all but the {r}.",
        ],
        CROPS,
    ),
    "shift": (
        [
            "Shift {img} {d}.",
            "Move the whole {n} {d}.",
            "Translate {img} {d}.",
            "Pan {img} {d}.",
            "Slide the content of {img} {d}.",
            "Offset {img} {d} a bit.",
            "Nudge everything {d}.",
            "Move all the content {d} by a few pixels.",
            "Displace the whole frame {d}.",
        ],
        SHIFTS,
    ),
}

# Suite tasks mapped onto the grammar's keys (same edit -> same key, so they never share a batch).
SUITE_KEYS = {
    "derain": "ll:rain:-",
    "add_rain": "ll:rain:+",
    "denoise": "ll:noise:-",
    "add_noise": "ll:noise:+",
    "deblur": "ll:blur:-",
    "blur": "ll:blur:+",
    "dehaze": "ll:haze:-",
    "add_haze": "ll:haze:+",
    "low_light_enhance": "ll:light:-",
    "darken": "ll:light:+",
    "super_resolution": "ll:resolution:-",
    "downsample": "ll:resolution:+",
    "jpeg_restore": "ll:jpeg:-",
    "jpeg_compress": "ll:jpeg:+",
    "colorization": "ll:color:-",
    "inpainting": "ll:inpaint:-",
}


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
