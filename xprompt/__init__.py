"""xprompt: an open implementation of X-Prompt (in-context image generation with an autoregressive VLM).

Importing the package sets ``HF_HUB_OFFLINE=1``: nothing here may download weights or data at run time.
Heavy modules (torch models, DeepSpeed, FAISS) are imported lazily by the code that needs them.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `from xprompt import XPrompt` without importing torch at package import
    if name == "XPrompt":
        from xprompt.pipeline import XPrompt

        return XPrompt
    raise AttributeError(name)
