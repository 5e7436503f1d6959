"""``python -m anydrop.bench``: see ``python -m anydrop.bench --help``."""

from anydrop.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
