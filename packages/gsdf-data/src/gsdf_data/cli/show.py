"""`gsdf-data show`: draw one shard sample (image and SDF points)."""

import click


@click.command("show")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--index", "index", default=0, show_default=True, help="Sample index.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .png.")
@click.option("--points", "n_points", default=6000, show_default=True, help="Points to draw.")
def show(directory, index, out, n_points):
    """Draw sample INDEX of the shards in DIRECTORY to OUT: the image with the near-surface
    points projected onto it, and the points coloured by their SDF to the hand and object."""
    from gsdf_data.cli.errors import writable_file
    from gsdf_data.shards import ShardSet

    writable_file(out)
    try:
        ss = ShardSet(directory)
        sample = ss[index]
    except (FileNotFoundError, IndexError, KeyError, OSError) as e:
        raise click.ClickException(str(e)) from None
    draw_sample(sample, out, n_points)
    click.echo(f"sample {index} ({sample['sample_id']}) -> {out}")


def draw_sample(sample: dict, out: str, n_points: int = 6000) -> None:
    """Render a shard sample dict (docs/contracts.md keys) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    pts = sample["points"].astype(np.float64)
    cam = pts * float(sample["norm_scale"]) + sample["norm_offset"]
    pick = rng.choice(len(pts), size=min(n_points, len(pts)), replace=False)
    fig = plt.figure(figsize=(15, 5))
    ax = fig.add_subplot(1, 3, 1)
    img = sample["image"]
    ax.imshow(img)
    for key, colour in (("sdf_hand", "tab:red"), ("sdf_obj", "tab:blue")):
        near = pick[np.abs(sample[key][pick]) < 0.01]
        uvw = cam[near] @ np.asarray(sample["K"], np.float64).T
        uv = uvw[:, :2] / uvw[:, 2:3]
        ax.scatter(uv[:, 0], uv[:, 1], s=1, c=colour, alpha=0.5)
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_title(f"{sample['sample_id']}: near-surface points (hand red, object blue)")
    for k, key in enumerate(("sdf_hand", "sdf_obj")):
        ax3 = fig.add_subplot(1, 3, k + 2, projection="3d")
        v = sample[key][pick]
        sc = ax3.scatter(
            pts[pick, 0], pts[pick, 2], -pts[pick, 1], c=np.clip(v, -0.1, 0.1), cmap="coolwarm", s=1
        )
        ax3.set_title(f"{key} (unit cube, clipped to ±0.1)")
        fig.colorbar(sc, ax=ax3, shrink=0.6)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
