"""Run the real ``xprompt`` entry point in this process, optionally with a fault injected (used by
``tests/test_bad_inputs.py`` in subprocesses; not a test module).

    python tests/cli_runner.py batch CASES.json        run many argv lists, print one JSON result per case
    python tests/cli_runner.py plain -- ARGV...            no fault
    python tests/cli_runner.py kill-at-rename TARGET -- ARGV...
        SIGKILL this process when it is about to move a finished file or directory onto TARGET (the worst
        moment: everything written, nothing swapped in yet)
    python tests/cli_runner.py kill-after-bytes N -- ARGV...
        RLIMIT_FSIZE = N with SIGXFSZ's default action (Python ignores it unless told): the process dies
        inside the first write that would make a file larger than N bytes (a kill in the middle of writing)
    python tests/cli_runner.py disk-full N -- ARGV...
        the same limit with SIGXFSZ ignored: that write fails with EFBIG, as on a full disk
    python tests/cli_runner.py pause-at-rename TARGET READY GO -- ARGV...
        before moving the result onto TARGET, create READY and wait (up to 600 s) for GO to exist: holds the
        output's write lock for as long as a test needs

Batch cases are argv lists; a string starting with "b:" is hex-decoded bytes (what a shell passes for text
that is not UTF-8), turned into str the way Python turns argv bytes into str (surrogateescape).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

from xprompt.cli import main


def _arg(a: str) -> str:
    return os.fsdecode(bytes.fromhex(a[2:])) if a.startswith("b:") else a


def batch(cases_file: str) -> None:
    results = []
    for argv in json.loads(Path(cases_file).read_text()):
        err, out = io.StringIO(), io.StringIO()
        tb, t0 = None, time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([_arg(a) for a in argv])
            except SystemExit as e:  # argparse usage errors
                code = e.code
            except BaseException:  # noqa: BLE001 - exactly what the battery must never see
                code, tb = "traceback", traceback.format_exc()
        results.append(
            {
                "argv": argv,
                "code": code,
                "err": err.getvalue(),
                "traceback": tb,
                "seconds": time.perf_counter() - t0,
            }
        )
    print(json.dumps(results))


def _watch_renames(target: Path, action) -> None:
    """Call ``action()`` just before anything is renamed onto ``target``."""
    from xprompt import io_utils

    target = target.resolve()
    real_replace, real_exchange = os.replace, io_utils.exchange_paths

    def replace(src, dst, *a, **k):
        if Path(dst).resolve() == target:
            action()
        return real_replace(src, dst, *a, **k)

    def exchange(a, b):
        if Path(b).resolve() == target:
            action()
        return real_exchange(a, b)

    os.replace = replace
    io_utils.exchange_paths = exchange


def _wait_for(ready: Path, go: Path) -> None:
    ready.write_text("1")
    t0 = time.time()
    while not go.exists() and time.time() - t0 < 600:
        time.sleep(0.05)


def run() -> int:
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "batch":
        batch(rest[0])
        return 0
    sep = rest.index("--")
    params, argv = rest[:sep], rest[sep + 1 :]
    if mode == "plain":
        pass
    elif mode == "kill-at-rename":
        _watch_renames(Path(params[0]), lambda: os.kill(os.getpid(), signal.SIGKILL))
    elif mode in ("kill-after-bytes", "disk-full"):
        n = int(params[0])
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        # Python ignores SIGXFSZ from startup (the write then fails with EFBIG: a full disk); the default
        # action kills the process inside the write instead
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN if mode == "disk-full" else signal.SIG_DFL)
    elif mode == "pause-at-rename":
        _watch_renames(Path(params[0]), lambda: _wait_for(Path(params[1]), Path(params[2])))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
