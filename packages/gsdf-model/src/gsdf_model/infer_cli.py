"""`gsdf-infer` command line (thin: parse, then call `gsdf_model.infer.infer`).

torch and the renderer are imported inside the command so that `--help` stays instant.
"""

import click

from gsdf_model import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-infer")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Trained checkpoint (RUN/last.pt)."
)
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option(
    "--bbox",
    multiple=True,
    metavar="X0,Y0,X1,Y1",
    help="Hand (and held object) box in pixels: one for all images, or one per image in order.",
)
@click.option(
    "--boxes",
    type=click.Path(),
    help="JSON of boxes: a list in image order, or {file name: [x0, y0, x1, y1]}.",
)
@click.option("--fx", type=float, help="Focal length in pixels (default: from --fov).")
@click.option("--fy", type=float, help="Vertical focal length in pixels (default: --fx).")
@click.option("--cx", type=float, help="Principal point x in pixels (default: image centre).")
@click.option("--cy", type=float, help="Principal point y in pixels (default: image centre).")
@click.option(
    "--fov",
    type=float,
    default=60.0,
    show_default=True,
    help="Field of view (degrees, longer side) assumed without --fx.",
)
@click.option("--resolution", default=64, show_default=True, help="Marching-cubes grid per pass.")
@click.option(
    "--mano",
    type=click.Path(),
    help="MANO_RIGHT.pkl the checkpoint was trained with (default: the path it recorded).",
)
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="Write overlay PNGs.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, mps).")
def main(
    images, checkpoint, out, bbox, boxes, fx, fy, cx, cy, fov, resolution, mano, overlay, device
):
    """Hand and object meshes (PLY, camera frame), joints and an overlay for each IMAGE.

    IMAGE is an image file or a folder of them (taken in name order: the frames of a video,
    for the video presets). Without a box the centre square is used; without --fx a
    default field of view. The wrist comes from the network itself: no ground truth needed.
    """
    from gsdf_model.infer import Intrinsics, infer, list_images, load_boxes, parse_box
    from gsdf_model.runtime import UserError

    try:
        if bbox and boxes:
            raise UserError("give --bbox or --boxes, not both")
        box_list = None
        if boxes:
            box_list = load_boxes(boxes, list_images(images))
        elif bbox:
            box_list = [parse_box(b) for b in bbox]
        cam = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, fov_deg=fov)
        s = infer(
            images,
            checkpoint,
            out,
            boxes=box_list,
            intrinsics=cam,
            device=device,
            resolution=resolution,
            mano=mano,
            overlay=overlay,
        )
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        f"{s['written']} image(s) → {s['out']} (meshes, joints json"
        f"{', overlays' if overlay else ''}); {s['intrinsics']}; "
        f"{s['seconds_per_image']:.2f} s per image on {s['device']} "
        f"({s['seconds_per_image_with_output']:.2f} s with output)"
        + (f"; no hand surface in {s['empty_hand']}" if s["empty_hand"] else "")
        + (f"; no object surface in {s['empty_obj']}" if s["empty_obj"] else "")
    )


if __name__ == "__main__":
    main()
