"""The `vmha` command line (typer). See `vmha.cli.main`."""
