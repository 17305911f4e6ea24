"""One-line errors at the command-line boundary, and output paths checked before any work.

Every `gsdf-data` and `gsdf-train` command runs inside :class:`OneLineErrors`: an OSError
(a path that cannot be read or written, a full disk) or one of the packages' own error types
(a user's data or option problem) ends the command with ``Error: <one line>`` and exit 1,
never a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

# Each command group names the error types of its package (imported lazily: the heavy
# modules that define them are loaded only when an error is being reported).
ErrorTypes = Callable[[], tuple[type[BaseException], ...]]


def data_errors() -> tuple[type[BaseException], ...]:
    """The gsdf-data error types that mean a user's data or options are wrong."""
    from gsdf_data.datasets.common import SampleError
    from gsdf_data.hand.mano import MANOFileError
    from gsdf_data.meshes import MeshError
    from gsdf_data.prepare import BadSampleError, PrepareError
    from gsdf_data.sampling import SamplingError
    from gsdf_data.shards import ShardSetError

    return (
        MANOFileError,
        MeshError,
        SamplingError,
        SampleError,
        BadSampleError,
        PrepareError,
        ShardSetError,
    )


def os_message(err: OSError) -> str:
    """``<path>: <reason>`` of an OSError, on one line."""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{err.filename}: {reason}" if err.filename else reason


class OneLineErrors(click.Group):
    """A click group that reports OSError and the error types ``errors()`` returns as one
    line (exit 1); it wraps the subcommands and subgroups it invokes."""

    def __init__(self, *args, errors: ErrorTypes = data_errors, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.errors = errors

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except OSError as err:
            raise click.ClickException(os_message(err)) from None
        except Exception as err:
            if isinstance(err, self.errors()):
                text = " ".join(str(err).split()) or type(err).__name__
                raise click.ClickException(text) from None
            raise


def writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) and prove a file can be written
    there, before any work starts; a ClickException naming ``option`` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise click.ClickException(
            f"{option} {path}: cannot write there ({err.strerror or err})"
        ) from None
    return path


def writable_file(path: str | Path, option: str = "--out") -> Path:
    """Check that the output file ``path`` can be written (its folder is created) before any
    work starts; a ClickException naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise click.ClickException(f"{option} {path}: is a folder, not a file name")
    writable_dir(path.parent if str(path.parent) else Path("."), option)
    return path
