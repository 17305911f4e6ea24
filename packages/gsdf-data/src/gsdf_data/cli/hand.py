"""`gsdf-data hand ...`: look at the hand models."""

import click


@click.group()
def hand() -> None:
    """Hand models (the procedural hand, or your MANO_RIGHT.pkl)."""


@hand.command()
@click.option(
    "--pose", type=click.Choice(["flat", "fist", "random"]), default="flat", show_default=True
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="hand.png",
    show_default=True,
    help="PNG to write.",
)
@click.option(
    "--mano",
    type=click.Path(dir_okay=False),
    default=None,
    help="MANO_RIGHT.pkl (default: the procedural hand).",
)
@click.option(
    "--tips",
    type=click.Choice(["obman", "dexycb"]),
    default="obman",
    show_default=True,
    help="MANO fingertip vertex convention.",
)
@click.option("--side", type=click.Choice(["right", "left"]), default="right", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --pose random.")
@click.option("--size", type=int, default=480, show_default=True, help="Panel size in pixels.")
def show(pose: str, out: str, mano: str | None, tips: str, side: str, seed: int, size: int) -> None:
    """Render the hand in a pose: the skin, and the skin see-through with its 21 keypoints
    and bones (thumb red, index orange, middle green, ring blue, little purple)."""
    from gsdf_data.hand import load_hand
    from gsdf_data.hand.mano import MANOFileError
    from gsdf_data.hand.show import save_picture

    try:
        model = load_hand(mano, side=side, **({"tips": tips} if mano else {}))
    except MANOFileError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        save_picture(model, pose, out, seed=seed, size=size)
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"wrote {out}: {model.name} {side} hand, pose {pose}, {model.num_vertices} vertices")
