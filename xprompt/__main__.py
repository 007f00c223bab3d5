import sys

from xprompt.cli import main

sys.exit(main())
