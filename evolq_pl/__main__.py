"""``python -m evolq_pl <command>``: the same command line as ``evolq-pl`` and ``python cli.py``."""
from evolq_pl.cli import main

main()
