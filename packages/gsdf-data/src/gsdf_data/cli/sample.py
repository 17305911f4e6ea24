"""`gsdf-data sample`: SDF samples of a user's own mesh or hand-object pair."""

import click

from gsdf_data.cli.options import sdf_backend_option


@click.command("sample")
@click.argument("mesh", type=click.Path(dir_okay=False))
@click.argument("object_mesh", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--points",
    "n_points",
    type=click.IntRange(min=1),
    default=40000,
    show_default=True,
    help="Points to sample.",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
@sdf_backend_option()
@click.option(
    "--sign",
    type=click.Choice(["vote", "parity", "pseudonormal", "winding"]),
    default="vote",
    show_default=True,
    help="Inside test of our backend.",
)
@click.option(
    "--min-per-side",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Inside/outside points per mesh.",
)
@click.option("--seed", default=0, show_default=True)
def sample(mesh, object_mesh, n_points, out, sdf_backend, sign, min_per_side, seed):
    """Sample points around MESH (and OBJECT_MESH) with their signed distances.

    Writes OUT (.npz) with `points` (N,3) in the meshes' own frame and units, `sdf` (N,) for
    one mesh or `sdf_hand`/`sdf_obj` for a pair (negative inside, same units), the unit-cube
    points `points_unit` and the normalisation `norm_offset`, `norm_scale`
    (points = points_unit · norm_scale + norm_offset).
    """
    from pathlib import Path

    import numpy as np

    from gsdf_data.cli.errors import writable_file
    from gsdf_data.meshes import MeshError, load_mesh
    from gsdf_data.sampling import SamplingConfig, SamplingError, sample_points

    writable_file(out)  # before the sampling, not after it

    try:
        meshes = [load_mesh(mesh)] + ([load_mesh(object_mesh)] if object_mesh else [])
        cfg = SamplingConfig(
            n=n_points,
            min_per_side=min_per_side,
            backend=sdf_backend,
            sign=sign,
            mesh_fractions=(0.5, 0.5) if object_mesh else (1.0,),
        )
        s = sample_points(meshes, cfg, sample_id=Path(mesh).name, seed=seed)
    except (MeshError, SamplingError, RuntimeError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    sdf = s.sdf.astype(np.float64) * s.norm.scale
    arrays = {
        "points": s.norm.to_camera(s.points).astype(np.float32),
        "points_unit": s.points,
        "norm_offset": s.norm.offset.astype(np.float32),
        "norm_scale": np.float32(s.norm.scale),
    }
    if object_mesh:
        arrays["sdf_hand"] = sdf[:, 0].astype(np.float32)
        arrays["sdf_obj"] = sdf[:, 1].astype(np.float32)
    else:
        arrays["sdf"] = sdf[:, 0].astype(np.float32)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from gsdf_data.files import atomic_write

    with atomic_write(out) as tmp:
        np.savez_compressed(tmp, **arrays)
    inside = ", ".join(f"{int(c[0])} inside / {int(c[1])} outside" for c in s.counts)
    click.echo(f"{len(s.points)} points ({inside}) -> {out}")
