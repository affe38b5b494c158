"""Entry point: ``python cli.py {fit,validate,...} --config configs/X.yaml``."""
from evolq_pl.cli import main

if __name__ == "__main__":
    main()
