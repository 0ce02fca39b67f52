"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class MnistEdgeError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data); never a bug."""
