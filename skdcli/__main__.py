"""`python -m skdcli ...` (what torchrun launches) is the same CLI as `skd ...`."""

from .cli import main

if __name__ == "__main__":
    main()
