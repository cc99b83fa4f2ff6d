"""The one exception type jaxinterp raises for bad user input; the CLI prints it as a single line."""

__all__ = ["JaxinterpError"]


class JaxinterpError(ValueError):
    """Bad input or state the user can fix; the message says what was wrong and what to do."""
