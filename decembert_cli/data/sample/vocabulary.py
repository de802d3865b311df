"""The sample corpus' words: its domains (tasks, objects, actions) and the caption templates.

One module shared by the pre-training corpus (corpus.py) and the downstream clips (downstream.py).
"""

from __future__ import annotations

from typing import NamedTuple


class Domain(NamedTuple):
    """A HowTo100M category with its tasks and the objects and actions its videos show."""

    category_1: str
    category_2: str
    tasks: tuple[tuple[int, str], ...]  # (task id, task name)
    objects: tuple[str, ...]
    actions: tuple[str, ...]


# Objects are disjoint across domains; an action is shared by two domains at most, so a caption of
# another domain's video mostly names other words, as in HowTo100M where it is usually another topic.
# Every object and action is a single WordPiece token of the BERT uncased vocabulary (tested).
DOMAINS = (
    Domain(
        "Food and Entertaining",
        "Recipes",
        ((90001, "make a tomato salad"), (90002, "cook chicken pasta"), (90003, "make pancakes")),
        ("tomato", "onion", "garlic", "lemon", "cheese", "chicken", "pasta", "flour", "egg", "butter"),
        ("cut", "chop", "slice", "stir", "mix", "peel", "fry", "pour"),
    ),
    Domain(
        "Cars & Other Vehicles",
        "Car Maintenance",
        ((90004, "change the oil"), (90005, "replace a flat tire"), (90006, "replace the brake pads")),
        ("oil", "tire", "wheel", "engine", "filter", "battery", "brake", "bolt", "belt"),
        ("remove", "check", "loosen", "tighten", "replace", "drain", "pour"),
    ),
    Domain(
        "Home and Garden",
        "Gardening",
        ((90007, "plant a flower bed"), (90008, "repot a house plant"), (90009, "start seeds indoors")),
        ("soil", "seed", "plant", "pot", "flower", "root", "grass", "leaf", "shovel"),
        ("dig", "water", "trim", "spray", "cover", "fill", "loosen"),
    ),
    Domain(
        "Hobbies and Crafts",
        "Woodworking",
        ((90010, "build a bird house"), (90011, "make a wooden shelf"), (90012, "build a picture frame")),
        ("wood", "board", "nail", "screw", "hammer", "plank", "ruler", "pencil", "panel"),
        ("measure", "mark", "sand", "drill", "saw", "glue", "paint", "cut"),
    ),
)
OBJECTS = tuple(o for d in DOMAINS for o in d.objects)
# what the dense captioner can name: half of each domain's
CAPTIONER_OBJECTS = frozenset(o for d in DOMAINS for o in d.objects[::2])
GENERIC_NOUNS = ("object", "thing", "item")  # what it says of the other objects
ACTIONS = tuple(dict.fromkeys(a for d in DOMAINS for a in d.actions))
# (task id, task name, its domain); a video of a task shows 4-6 of its domain's objects
TASKS = tuple((tid, name, d) for d in DOMAINS for tid, name in d.tasks)

# ASR templates: 4-12 words, no vocabulary word outside {action} and {obj}.
TEMPLATES = (
    "okay now we {action} the {obj} really nice",
    "so {action} your {obj}",
    "next you want to {action} the {obj}",
    "and then i just {action} the {obj} like this",
    "now {action} the {obj}",
    "we are going to {action} this {obj} now",
    "let me {action} the {obj} here",
    "you can {action} the {obj} a little bit more",
    "i like to {action} my {obj} first",
    "then {action} the {obj} until it looks good",
    "make sure you {action} the {obj} well",
    "all right so now we {action} the {obj} okay",
)
IRRELEVANT = (
    "hey guys welcome back to my channel",
    "thanks for watching",
    "don't forget to subscribe",
    "music",
    "please like and subscribe",
    "see you in the next video",
    "hi everyone",
    "applause",
    "leave a comment down below",
)
# Dense captions: generic, for every domain; no vocabulary word outside {obj} (tested).
DENSE_OBJECT = (
    "a {adj} {obj}",
    "a close up of a {obj}",
    "a person holding a {obj}",
    "a {obj} next to a person",
    "the {obj} is {adj}",
)
ADJECTIVES = ("small", "large", "white", "red", "green", "brown", "black")
BACKGROUND = (
    "a brown table",
    "a person s hand",
    "a white wall",
    "a black shirt",
    "a window in the background",
    "a gray floor",
    "a blue sky",
    "a man wearing a hat",
    "a shelf on the wall",
    "a light on the ceiling",
)
UNKNOWN = ("a <unk> on a table", "a person holding a <unk>", "<unk> in the background")
