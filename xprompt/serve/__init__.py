"""The web app (``xprompt serve``): ``handlers`` are plain functions over the ``XPrompt`` API, ``app`` builds the
Gradio page from them. Importing this package does not import Gradio; ``xprompt.serve.app`` does."""
