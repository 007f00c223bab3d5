"""``python -m xprompt.train ...``: the trainer entry point for launchers.

    deepspeed --num_gpus 2 --module xprompt.train --config configs/tiny.json --data DIR --out runs/NAME
    torchrun --nproc_per_node 2 -m xprompt.train --config configs/tiny.json --data DIR --out runs/NAME

Takes the arguments of ``xprompt train model`` (an optional leading ``model`` is accepted), plus the
``--local_rank`` the deepspeed launcher appends. Errors print one line and exit 2, like the ``xprompt`` CLI.
"""

from __future__ import annotations

import argparse
import sys

from xprompt.cli import run_command, set_offline_env
from xprompt.cli_checks import check_args
from xprompt.errors import XPromptError
from xprompt.train.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    set_offline_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "model":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m xprompt.train", description="train the X-Prompt model")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_args(parser, args)
    except XPromptError as e:
        print(f"python -m xprompt.train: error: {e}", file=sys.stderr)
        return 2
    return run_command(run, args)


if __name__ == "__main__":
    sys.exit(main())
