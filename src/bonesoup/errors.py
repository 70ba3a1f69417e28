"""Exceptions that the command line turns into a one-line message and exit status 2."""


class BonesoupError(ValueError):
    """Invalid input: the message names the value, the rule it breaks and the fix."""
