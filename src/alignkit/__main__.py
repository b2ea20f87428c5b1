"""`python -m alignkit` (also what `accelerate launch -m alignkit ...` runs)."""

from alignkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
