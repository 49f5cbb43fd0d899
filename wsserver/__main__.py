"""`python -m wsserver ...`: the same as the `wsserver` command."""

import sys

from .cli import main

sys.exit(main())
