"""``python -m fewnorm.cli``: the ``fewnorm`` command (what ``torchrun -m fewnorm.cli`` starts)."""

from fewnorm.cli.main import main

if __name__ == "__main__":
    main()
