"""Entry point from a checkout: ``python cli.py {fit,validate,export,landscape,seeds} --config configs/X.yaml``
(the same as the installed ``evolq-pl`` command and ``python -m evolq_pl``)."""
from evolq_pl.cli import main

if __name__ == "__main__":
    main()
