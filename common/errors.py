"""The error types for mistakes a user can fix (bad flag, missing file, mismatched checkpoint).

Drivers catch ``UserError`` and print its message as a single line, then exit 2; everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message names the problem and the fix, in one line."""


class ConfigError(UserError, ValueError):
    """A bad setting value: the one line names the flag that sets it, the value and the rule. The same text whether
    the value came from the command line or from Python (a typed config's ``__post_init__`` raises it)."""
