"""The CLI under test, in process."""

from typer.testing import CliRunner


def cli_runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout on every click version (before 8.2 it mixed them by default)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: always apart, and no such argument
        return CliRunner()
