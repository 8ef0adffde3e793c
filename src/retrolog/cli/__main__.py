"""``python -m retrolog.cli``: the typer app without the console script's routing."""

from .main import main

main()
