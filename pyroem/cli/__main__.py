"""``python -m pyroem.cli``: the same as ``pyroem`` (and ``python -m pyroem``)."""

import sys

from pyroem.cli.commands import main

sys.exit(main())
