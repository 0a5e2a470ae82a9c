"""`python -m lenet5` is the `lenet5` command."""

import sys

from .cli import main

sys.exit(main())
