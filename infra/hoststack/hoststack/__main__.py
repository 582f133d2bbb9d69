"""`python -m hoststack COMMAND`: see hoststack.commands."""

import sys

from hoststack.commands import main

sys.exit(main())
