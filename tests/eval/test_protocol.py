"""Protocol "gsdf" against the brute-force reference protocol (reference_protocol.py).

Deterministic parts (ICP iterates, contact metrics on given meshes) must agree to rounding;
the full pipeline, whose surface samples differ between the two implementations, must agree
within 2 % or the spread over seeds. Cases sit at the origin and in the camera frame.
"""

import numpy as np
import pytest
import trimesh

from gsdf_eval.align import align_reference
from gsdf_eval.contact import contact_metrics_reference, reference_lattice
from gsdf_eval.run import EvalSettings, score_pair


def _mesh(vertices, faces) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), faces, process=False)


def _sphere(radius, center, subdivisions=2) -> trimesh.Trimesh:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return _mesh(s.vertices + center, s.faces)


def _bumpy(vertices, amplitude=0.0012):
    """A smooth perturbation, as a network's surface deviates from the GT (metres)."""
    c = vertices - vertices.mean(0)
    return vertices + amplitude * np.stack(
        [np.sin(90 * c[:, 1]), np.sin(70 * c[:, 2] + 1), np.cos(80 * c[:, 0])], 1
    )


def _hand_object(hand_mesh, frame, scale=1.08, shift=(0.012, -0.006, 0.015), press=0.006):
    """GT hand + sphere in the frame, and a prediction: the pair bumped, scaled about the
    origin (so also moved when far from it) and shifted, its object pushed `press` into
    the hand."""
    hv = hand_mesh.vertices - hand_mesh.vertices.mean(0) + frame
    centre = hv.mean(0) + np.array([0.0, 0.015, 0.018])
    hand_gt, obj_gt = _mesh(hv, hand_mesh.faces), _sphere(0.022, centre)
    obj_p = obj_gt.vertices - [0.0, 0.0, press]
    to_pred = lambda v: v * scale + np.asarray(shift)  # noqa: E731
    hand_p = _mesh(to_pred(_bumpy(hv)), hand_mesh.faces)
    return hand_p, hand_gt, _mesh(to_pred(obj_p), obj_gt.faces), obj_gt


def _vf(mesh):
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)


@pytest.mark.parametrize("case", ["scaled_shifted", "identical"])
def test_icp_iterates_are_the_references(hand_mesh, frame, reference, case):
    """Same samples in, the same solves out: scale, translation and the number of solves."""
    rng = np.random.default_rng(11)
    hand_p, hand_gt, _, _ = _hand_object(hand_mesh, frame)
    if case == "identical":
        hand_p = hand_gt
    n = 30_000 if case == "identical" else 8_000
    src = reference.sample_area_weighted(*_vf(hand_p), n, rng)
    dst = reference.sample_area_weighted(*_vf(hand_gt), n, rng)
    s_ref, t_ref, solves = reference.icp_ts(src, dst)
    res = align_reference(src, dst)
    assert res.iterations == solves
    assert res.scale == pytest.approx(s_ref, rel=1e-9)
    np.testing.assert_allclose(res.translation, t_ref, rtol=0, atol=1e-9)
    if case == "identical":
        # RMS residual of two samplings of one surface is below 1 mm: no solve at all
        assert solves == 0 and res.converged
    else:
        assert solves >= 1
        assert res.scale == pytest.approx(1 / 1.08, rel=0.01)


def _contact_cases(hand_mesh, frame):
    hv = hand_mesh.vertices - hand_mesh.vertices.mean(0) + frame
    hand = _mesh(hv, hand_mesh.faces)
    centre = hv.mean(0) + np.array([0.0, 0.015, 0.01])
    closed = _sphere(0.022, centre)
    # an open object (a cap cut off), where libigl's sign is (1 − 2|w|)·d with |w| < 1
    keep = closed.triangles_center[:, 1] < centre[1] + 0.012
    opened = _mesh(closed.vertices, closed.faces[keep])
    apart = _sphere(0.02, centre + np.array([0.0, 0.0, 0.08]))
    return {"closed": (hand, closed), "open": (hand, opened), "apart": (hand, apart)}


@pytest.mark.parametrize("case", ["closed", "open", "apart"])
def test_contact_metrics_are_the_references(hand_mesh, frame, reference, case):
    if case != "closed" and not frame.any():
        pytest.skip("brute force is slow: the open and apart cases run in the camera frame")
    hand, obj = _contact_cases(hand_mesh, frame)[case]
    ours = contact_metrics_reference(hand, obj)
    in_contact, depth, volume = reference.contact(*_vf(hand), *_vf(obj))
    assert ours["contact"] is in_contact
    assert ours["penetration_cm"] == pytest.approx(depth, abs=1e-11)
    assert ours["intersection_cm3"] == volume  # the same nodes, counted exactly
    assert in_contact is (case != "apart")
    if case != "apart":
        assert depth > 0.1 and volume > 0


def test_lattice_is_the_references_float32_lattice(frame, reference):
    lo = frame + np.array([0.0013, -0.0071, 0.0004])
    hi = lo + np.array([0.0167, 0.003, 0.0251])
    ours = reference_lattice(lo, hi)
    theirs = reference.lattice(lo, hi)
    np.testing.assert_array_equal(ours, theirs)
    # int((hi + 5 mm − (lo − 5 mm)) / 5 mm) + 1 nodes per axis, from lo − 5 mm
    assert len(ours) == 6 * 3 * 8
    np.testing.assert_allclose(ours[0], lo - 0.005, atol=1e-6)


@pytest.mark.parametrize("depth", [0.003, 0.012])
def test_sphere_pushed_into_box_known_depth_and_nodes(frame, reference, depth):
    """A 2.17 cm sphere pushed `depth` into the top of a 10 cm box: depth is the lowest
    vertex's height below the top, the volume the lattice nodes inside the cap (counted
    here from the analytic sphere), and both equal the brute-force reference's."""
    r, top = 0.0217, frame[2] + 0.05  # r: no lattice node at the pole, on the surface
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    box = _mesh(box.vertices + frame, box.faces)
    hand = _sphere(r, frame + np.array([0.0011, -0.0007, 0.05 + r - depth]), subdivisions=3)
    ours = contact_metrics_reference(hand, box)
    assert ours["contact"] is True
    lowest = hand.vertices[:, 2].min()
    # the reference nudges hand vertices by 1e-10 m along every axis (1e-8 cm up here)
    assert ours["penetration_cm"] == pytest.approx((top - lowest - 1e-10) * 100, abs=1e-11)
    assert ours["penetration_cm"] == pytest.approx(depth * 100, abs=0.005)
    lo = np.maximum(hand.vertices.min(0), box.vertices.min(0))
    hi = np.minimum(hand.vertices.max(0), box.vertices.max(0))
    nodes = reference_lattice(lo, hi)
    centre = hand.vertices.mean(0)
    dist = np.linalg.norm(nodes - centre, axis=1)
    # 70 µm: more than the icosphere's 60 µm sagitta, so the mesh and the sphere agree
    clear = (np.abs(dist - r) > 7e-5) & (np.abs(nodes[:, 2] - top) > 1e-6)
    assert clear.all()  # no node on a boundary: the count is unambiguous
    expected = int(((dist < r) & (nodes[:, 2] < top)).sum())
    assert expected >= (1 if depth > 0.005 else 0)
    assert ours["intersection_cm3"] == pytest.approx(expected * 0.125, abs=1e-9)
    in_contact, ref_depth, ref_volume = reference.contact(*_vf(hand), *_vf(box))
    assert in_contact and ref_volume == ours["intersection_cm3"]
    assert ref_depth == pytest.approx(ours["penetration_cm"], abs=1e-11)


def test_lens_volume_matches_closed_form(reference):
    """Two overlapping spheres far from the origin: the lens's closed-form volume."""
    r, d = 0.03, 0.035  # equal spheres, centres d apart: lens volume π(4r + d)(2r − d)² / 12
    frame = np.array([-0.02, 0.05, 0.7])
    a = _sphere(r, frame + np.array([0.0003, 0.0002, -0.0004]), subdivisions=3)
    b = _sphere(r, frame + np.array([d + 0.0003, 0.0002, -0.0004]), subdivisions=3)
    ours = contact_metrics_reference(a, b)
    closed_form = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12 * 1e6
    assert ours["intersection_cm3"] == pytest.approx(closed_form, rel=0.15)
    # the same lattice counted against the analytic spheres (the discretisation alone)
    lo = np.maximum(a.vertices.min(0), b.vertices.min(0))
    hi = np.minimum(a.vertices.max(0), b.vertices.max(0))
    nodes = reference.lattice(lo, hi)
    da = np.linalg.norm(nodes - a.vertices.mean(0), axis=1)
    db = np.linalg.norm(nodes - b.vertices.mean(0), axis=1)
    sure = ((da < r - 2.5e-4) & (db < r - 2.5e-4)).sum()  # 0.25 mm: beyond the sagitta
    maybe = ((da < r + 2.5e-4) & (db < r + 2.5e-4)).sum()
    assert sure * 0.125 <= ours["intersection_cm3"] <= maybe * 0.125


KEYS = ("hand_cd_cm2", "hand_fscore_1mm", "hand_fscore_5mm", "obj_cd_cm2", "obj_fscore_5mm",
        "obj_fscore_10mm", "penetration_cm", "intersection_cm3", "align_scale")  # fmt: skip


def test_every_metric_agrees_with_the_reference_in_the_camera_frame(hand_mesh, reference):
    """The whole pipeline, independent samples on each side: every metric within 2 % or
    three standard errors of the difference over seeds; contact exactly."""
    meshes = _hand_object(hand_mesh, np.array([0.03, -0.05, 0.58]))
    n, seeds = 10_000, range(3)
    ours = [score_pair(*meshes, EvalSettings(n_points=n), seed=s) for s in seeds]
    vf = [_vf(m) for m in meshes]
    theirs = [reference.score_pair(*vf, np.random.default_rng(100 + s), n=n) for s in seeds]
    assert {o["contact"] for o in ours} == {t["contact"] for t in theirs} == {True}
    assert min(o["intersection_cm3"] for o in ours) > 0  # the lattice is exercised
    for key in KEYS:
        a = np.array([o[key] for o in ours])
        b = np.array([t[key] for t in theirs])
        sem = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        tol = max(0.02 * abs(b.mean()), 3 * sem)
        assert abs(a.mean() - b.mean()) <= tol, (key, a, b)
    # the scaled, shifted (and bumpy) prediction is aligned back
    assert np.mean([o["align_scale"] for o in ours]) == pytest.approx(1 / 1.08, rel=0.01)
