import sys

from pyroem.cli import main

sys.exit(main())
