"""The command line: the Typer app, one thin module per command, all console output and progress."""
