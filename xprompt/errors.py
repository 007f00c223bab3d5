"""User-facing errors.

``XPromptError`` carries a one-line message naming the problem and what to do; the CLI prints it and exits
with code 2. Library code raises it (or a subclass) for bad input; programming errors stay ordinary
exceptions so that they keep their tracebacks.
"""


class XPromptError(Exception):
    """Bad input or an unusable file: the message is shown to the user as is."""


class ConfigError(XPromptError):
    """A config file or dict is malformed (unknown key, wrong type, contradictory values)."""


class VocabularyError(XPromptError):
    """An id, code, grid size or special token outside the vocabulary's ranges."""


class ImageInputError(XPromptError):
    """An image file that cannot be read or has an unusable size."""


class CheckpointError(XPromptError):
    """A checkpoint directory that is missing, incomplete, or disagrees with itself or with the model."""


class IntegrityError(CheckpointError):
    """An artefact whose files do not match the checksums recorded when it was written (truncated, altered)."""


class XPromptWarning(UserWarning):
    """Something the user should know (the result may be poor, a setting was not what was asked), not an error.
    The CLI prints each as one line ``xprompt: warning: ...`` on stderr."""


def xprompt_warn(message: str, stacklevel: int = 3) -> None:
    """Issue an ``XPromptWarning`` (one line; shown once per call site and message by Python's default filter)."""
    import warnings

    warnings.warn(message, XPromptWarning, stacklevel=stacklevel)
