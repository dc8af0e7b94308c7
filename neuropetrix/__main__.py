"""`python -m neuropetrix …` is the `neuropetrix` command."""
import sys

from neuropetrix.cli import main

sys.exit(main())
