"""Subcommands of the `bonesoup` command line.

Each module here defines `register(subparsers)`, which adds one subcommand whose parser sets
`func` to a callable taking the parsed arguments and returning the exit status.
"""
