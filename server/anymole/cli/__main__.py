"""``python -m anymole.cli``: the `anymole` console script."""

from anymole.cli import main

main()
