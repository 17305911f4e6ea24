"""`gsdf-eval` command line (thin: parse, then call gsdf_eval functions)."""

import click

from gsdf_eval import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-eval")
def main() -> None:
    """Score hand-object reconstructions with the standard metrics."""
