"""``python -m plughost.cli``: the command line, as ``python -m plughost``."""

from . import main

if __name__ == "__main__":
    main()
