"""One error type for mistakes a user can fix (bad flag, missing file, mismatched checkpoint).

Drivers catch it and print its message as a single line, then exit 2; everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message names the problem and the fix, in one line."""
