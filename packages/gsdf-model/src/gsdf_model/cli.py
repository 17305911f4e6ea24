"""`gsdf-train` command line (thin: parse, then call gsdf_model functions).

Heavy modules (torch) are imported inside the commands so that `--help` stays instant.
"""

import click

from gsdf_model import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-train")
def main() -> None:
    """Train the gSDF model and reconstruct meshes from a checkpoint."""


@main.command("describe")
@click.option("--preset", "preset", default="obman", show_default=True, help="Model preset.")
@click.option(
    "--points", default=2000, show_default=True, help="Query points per sample for FLOPs."
)
def describe_cmd(preset: str, points: int) -> None:
    """Print a preset's architecture, parameter counts per part and FLOPs per sample."""
    from gsdf_model.config import PRESETS, get_preset
    from gsdf_model.describe import describe

    if preset not in PRESETS:
        raise click.BadParameter(
            f"unknown preset; known: {', '.join(PRESETS)}", param_hint="--preset"
        )
    click.echo(describe(get_preset(preset), n_points=points))
