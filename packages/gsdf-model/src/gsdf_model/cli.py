"""`gsdf-train` command line (thin: parse, then call gsdf_model functions)."""

import click

from gsdf_model import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-train")
def main() -> None:
    """Train the gSDF model and reconstruct meshes from a checkpoint."""
