"""``python -m carbonscaler.cli``."""

from carbonscaler.cli import main

main()
