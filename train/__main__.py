"""``python -m xprompt.train ...``: the trainer entry point for launchers.

    deepspeed --num_gpus 2 -m xprompt.train --config configs/tiny.json --data DIR --out runs/NAME
    torchrun --nproc_per_node 2 -m xprompt.train --config configs/tiny.json --data DIR --out runs/NAME

Takes the arguments of ``xprompt train model`` (an optional leading ``model`` is accepted), plus the
``--local_rank`` the deepspeed launcher appends. Errors print one line and exit 2, like the ``xprompt`` CLI.
"""

from __future__ import annotations

import argparse
import sys

from xprompt.train.cli import add_arguments, run

from xprompt.errors import XPromptError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "model":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m xprompt.train", description="train the X-Prompt model")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except XPromptError as e:
        print(f"xprompt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
