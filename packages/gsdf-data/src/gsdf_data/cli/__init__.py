"""`gsdf-data` command line. Subcommands live in sibling modules that import only click at
module level (heavy libraries are imported inside the command bodies, so `--help` is instant).
"""

import click

from gsdf_data import __version__
from gsdf_data.cli.errors import OneLineErrors


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-data")
def main() -> None:
    """Prepare hand-object data for gSDF: hand models, SDF samples, HDF5 shards."""


def _register() -> None:
    # One line per subcommand module; keep imports here cheap.
    from gsdf_data.cli import check, sample, show

    main.add_command(sample.sample)
    main.add_command(check.check)
    main.add_command(show.show)
    from gsdf_data.cli import prepare, synth

    main.add_command(prepare.prepare)
    main.add_command(synth.synth)
    from gsdf_data.cli.hand import hand

    main.add_command(hand)
    pass


_register()
