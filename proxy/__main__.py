"""`python -m proxy [flags]` serves like `python wsgi.py`; `python -m proxy doctor` checks (see ``cli``)."""
import sys

from .cli import main

sys.exit(main(prog="python -m proxy"))
