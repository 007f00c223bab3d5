"""Package, CLI, config and atomic-write basics."""

import dataclasses
import importlib
import json
import os
import subprocess
import sys

import pytest

from xprompt.cli import main
from xprompt.config_io import config_from_dict, load_config, save_config
from xprompt.errors import ConfigError, XPromptError
from xprompt.io_utils import atomic_dir, atomic_write_text


def test_import_namespaces():
    for name in ["xprompt", "xprompt.tokenizer", "xprompt.retrieval", "xprompt.train", "xprompt.eval"]:
        importlib.import_module(name)
    # nothing installs a top-level module named like our folders
    code = "import importlib.util as u; print([n for n in ('tokenizer','train','eval','retrieval') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"


def test_import_leaves_the_environment_alone():
    """Importing xprompt (and its API) changes no environment variable; the CLI sets the offline ones."""
    code = (
        "import os; before = dict(os.environ); import xprompt, xprompt.pipeline, xprompt.cli\n"
        "print(dict(os.environ) == before); xprompt.cli.set_offline_env(); print(os.environ['HF_HUB_OFFLINE'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "1"]


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in [
        "train",
        "data",
        "index",
        "generate",
        "describe",
        "t2i",
        "compile-prompt",
        "edit",
        "eval",
        "demo",
    ]:
        assert cmd in out


def test_cli_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "xprompt", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.startswith("xprompt ")


def test_cli_unknown_command_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


@dataclasses.dataclass
class _Cfg:
    a: int = 1
    b: float = 0.5
    name: str = "x"


def test_config_strict(tmp_path):
    assert config_from_dict(_Cfg, {"a": 3, "b": 2}) == _Cfg(3, 2.0, "x")
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_dict(_Cfg, {"a": 1, "typo": 2})
    with pytest.raises(ConfigError, match="must be int"):
        config_from_dict(_Cfg, {"a": "3"})
    save_config(_Cfg(5), tmp_path / "c.json")
    assert load_config(_Cfg, tmp_path / "c.json") == _Cfg(5)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(_Cfg, tmp_path / "bad.json")


def test_atomic_dir_keeps_old_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "MARK").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True, marker="MARK") as d:
        (d / "MARK").write_text("2")
        raise RuntimeError("interrupted")
    assert (out / "MARK").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp leftovers
    with pytest.raises(XPromptError, match="not empty"), atomic_dir(out):
        pass
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(XPromptError, match="refusing"), atomic_dir(foreign, overwrite=True, marker="MARK"):
        pass
    assert (foreign / "precious.txt").read_text() == "keep"


def test_atomic_write_text(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic_write_text(p, json.dumps({"x": 1}))
    assert json.loads(p.read_text()) == {"x": 1}


def test_atomic_write_permissions(tmp_path):
    import os
    import stat

    p = tmp_path / "f.bin"
    atomic_write_text(p, "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask  # not mkstemp's 0600
