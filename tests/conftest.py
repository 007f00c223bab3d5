"""Tests run offline, in the environment the command line sets (importing xprompt no longer sets it)."""

from xprompt.cli import set_offline_env

set_offline_env()
