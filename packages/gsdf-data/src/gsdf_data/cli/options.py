"""Options shared by several `gsdf-data` commands (click only: `--help` stays instant)."""

from __future__ import annotations

import click

# gsdf_data.sdf.BACKENDS and BACKEND_ALIASES, spelt out here to keep numba out of `--help`
_BACKENDS = ["auto", "ours", "mesh-to-sdf"]
_ALIASES = {"open3d": "ours"}


def _backend(ctx, param, value: str) -> str:
    if value in _ALIASES:
        new = _ALIASES[value]
        click.echo(
            f"warning: --sdf-backend {value} is a deprecated name of {new} (same code)", err=True
        )
        return new
    return value


def sdf_backend_option():
    """``--sdf-backend``: ours (our BVH, the default behind auto) or mesh-to-sdf (comparison);
    the old name open3d still works, with a one-line warning, and is recorded as ours."""
    return click.option(
        "--sdf-backend",
        type=click.Choice([*_BACKENDS, *_ALIASES]),
        default="auto",
        show_default=True,
        callback=_backend,
        help="SDF computation: ours (our own BVH; auto = ours) or mesh-to-sdf (comparison). "
        "open3d: deprecated name of ours.",
    )
