"""The one exception type users see: a one-line message naming the problem and the fix."""


class CwhawqError(Exception):
    """A user-facing error. The message is a single line: what is wrong, then how to fix it.

    The command-line entry points catch it and print ``error: <message>`` without a traceback.
    """
