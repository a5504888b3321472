"""One module per ``cmtp`` sub-command group; each exposes a typer app or command function."""
