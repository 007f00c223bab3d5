"""xprompt: an open implementation of X-Prompt (in-context image generation with an autoregressive VLM).

Importing the package changes nothing in the process (no environment variables): the command line sets the
offline environment where it starts (``xprompt.cli.set_offline_env``). Nothing here downloads weights or data
at run time. Heavy modules (torch models, DeepSpeed, FAISS) are imported lazily by the code that needs them.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `from xprompt import XPrompt` without importing torch at package import
    if name == "XPrompt":
        from xprompt.pipeline import XPrompt

        return XPrompt
    if name == "EditSession":
        from xprompt.session import EditSession

        return EditSession
    raise AttributeError(name)
