"""``python -m carbonscaler``: the ``carbonscaler`` command line."""

from carbonscaler.cli import main

if __name__ == "__main__":
    main()
