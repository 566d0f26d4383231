"""fewnorm's Typer command-line app (installed as ``fewnorm.cli``)."""
