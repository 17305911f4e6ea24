"""Scoring: one hand-object pair (`score_pair`) and a whole prediction set (`run_set`).

A set run writes, into its output directory, `per_sample.csv` (one row per sample) and
`summary.json` (the set statistics `gsdf-eval table` reads). Statistics follow the paper:
Chamfer distances are summarised by their median; F-scores, Eh, Eo, penetration depth and
intersection volume by their mean; the contact ratio is the fraction of samples in contact.
Both mean and median of every metric are stored as well.

Protocols (`EvalSettings.protocol`): "gsdf" (default) reproduces the reference code step by
step: its ICP with its stopping rule (align.align_reference), fresh 30,000-point samples of
the aligned prediction and of the GT for the hand metrics (the reference's eval.py samples
anew after alignment), F-scores 2PR/(P + R + 1e-7), and its signed-distance contact metrics
(contact.contact_metrics_reference). "converged" runs ICP to its fixed point, reuses the
alignment samples for the hand metrics and scores contact with the fast winding number and
voxel centres (align.align_scale_translation, contact.contact_metrics).
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_eval.io import (
    EvalInputError,
    SampleFiles,
    discover,
    gt_counts,
    load_annotation,
    load_mesh,
)
from gsdf_eval.mesh import Mesh

# `gsdf-eval pair --json` prints exactly these keys, in this order.
PAIR_KEYS = (
    "hand_cd_cm2",
    "hand_fscore_1mm",
    "hand_fscore_5mm",
    "obj_cd_cm2",
    "obj_fscore_5mm",
    "obj_fscore_10mm",
    "penetration_cm",
    "intersection_cm3",
    "contact",
    "align_scale",
    "align_translation",
)

# Per-sample CSV columns after `id`.
ROW_KEYS = (
    "hand_cd_cm2",
    "hand_fscore_1mm",
    "hand_fscore_5mm",
    "obj_cd_cm2",
    "obj_fscore_5mm",
    "obj_fscore_10mm",
    "hand_joint_err_cm",
    "hand_joint_err_rel_cm",
    "obj_center_err_cm",
    "penetration_cm",
    "intersection_cm3",
    "contact",
    "align_scale",
    "align_tx",
    "align_ty",
    "align_tz",
    "align_iterations",
    "align_converged",
)

# metric -> the GT part (io.gt_counts key) every sample of a complete run has it for
EXPECTED_FROM = {
    "hand_cd_cm2": "hand",
    "hand_fscore_1mm": "hand",
    "hand_fscore_5mm": "hand",
    "obj_cd_cm2": "obj",
    "obj_fscore_5mm": "obj",
    "obj_fscore_10mm": "obj",
    "hand_joint_err_cm": "json",
    "hand_joint_err_rel_cm": "json",
    "obj_center_err_cm": "json",
    "contact_ratio_pct": "both",
    "penetration_cm": "both",
    "intersection_cm3": "both",
}

# metric -> statistic the paper reports for it
SUMMARY_STATS = {
    "hand_cd_cm2": "median",
    "hand_fscore_1mm": "mean",
    "hand_fscore_5mm": "mean",
    "obj_cd_cm2": "median",
    "obj_fscore_5mm": "mean",
    "obj_fscore_10mm": "mean",
    "hand_joint_err_cm": "mean",
    "hand_joint_err_rel_cm": "mean",
    "obj_center_err_cm": "mean",
    "contact_ratio_pct": "mean",
    "penetration_cm": "mean",
    "intersection_cm3": "mean",
}


PROTOCOLS = ("gsdf", "converged")


@dataclass(frozen=True)
class EvalSettings:
    """n_points: surface samples per mesh; max_iter: ICP iteration cap; voxel: lattice step
    (metres); protocol: "gsdf" (the reference's, default) or "converged"; units: "m" or
    "mm", what the input files are in."""

    n_points: int = 30_000
    max_iter: int = 100
    voxel: float = 0.005
    seed: int = 0
    protocol: str = "gsdf"
    units: str = "m"

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {self.protocol!r}")


def score_pair(hand_pred, hand_gt, obj_pred=None, obj_gt=None, settings=EvalSettings(), seed=None):
    """Score one prediction against its ground truth: meshes in metres, each a
    gsdf_eval.mesh.Mesh (what io.load_mesh returns) or anything else with `vertices` (V, 3)
    and `faces` (F, 3), such as a trimesh.Trimesh.

    The predicted hand is aligned to the GT hand (scale + translation, see align.py) and the
    same transform is applied to the predicted object; the contact metrics are computed on
    the aligned predicted hand and object, as in the reference code. Returns a dict with the
    PAIR_KEYS (object entries None without an object) plus `align_iterations` and
    `align_converged`. `seed` (default settings.seed) makes the surface sampling repeatable.
    Runs on one thread: ICP's many small KD-tree re-queries lose more to OpenMP start-up and
    spinning than they gain, and `run_set` parallelises over samples instead.
    """
    from threadpoolctl import threadpool_limits

    import gsdf_eval.nn  # noqa: F401  (loads pykdtree's OpenMP runtime, so the limit sees it)

    with threadpool_limits(limits=1, user_api="openmp"):
        return _score_pair(hand_pred, hand_gt, obj_pred, obj_gt, settings, seed)


def sample_streams(seed: int) -> list[np.random.Generator]:
    """The surface-sampling streams of a pair: predicted hand, GT hand, predicted object, GT
    object (one stream per mesh, as before protocols existed: "converged" numbers are
    unchanged)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def _score_pair(hand_pred, hand_gt, obj_pred, obj_gt, settings, seed):
    from gsdf_eval.align import align_reference, align_scale_translation, sample_surface
    from gsdf_eval.contact import contact_metrics, contact_metrics_reference
    from gsdf_eval.metrics import chamfer_cm2, fscore
    from gsdf_eval.nn import nn_distances

    if (obj_pred is None) != (obj_gt is None):
        raise EvalInputError("object metrics need both the predicted and the GT object mesh")
    reference = settings.protocol == "gsdf"
    rngs = sample_streams(settings.seed if seed is None else seed)
    n = settings.n_points
    eps = 1e-7 if reference else 0.0
    if reference:
        # two independent sets per hand: one for ICP, fresh ones for the metrics (the
        # reference scores the exported aligned mesh with new samples)
        hp, hp_fresh = sample_surface(hand_pred, n, rngs[0], sets=2)
        hg, hg_fresh = sample_surface(hand_gt, n, rngs[1], sets=2)
        al = align_reference(hp, hg, max_iter=settings.max_iter)
        d_hp, d_hg = nn_distances(al.apply(hp_fresh), hg_fresh)
    else:
        hp = sample_surface(hand_pred, n, rngs[0])
        hg = sample_surface(hand_gt, n, rngs[1])
        al = align_scale_translation(hp, hg, max_iter=settings.max_iter)
        d_hp, d_hg = al.dist_src, al.dist_dst
    out = dict.fromkeys(PAIR_KEYS)
    out.update(
        hand_cd_cm2=chamfer_cm2(d_hp, d_hg),
        hand_fscore_1mm=fscore(d_hp, d_hg, 0.001, eps),
        hand_fscore_5mm=fscore(d_hp, d_hg, 0.005, eps),
        align_scale=al.scale,
        align_translation=[float(x) for x in al.translation],
    )
    if obj_pred is not None:
        op = al.apply(sample_surface(obj_pred, n, rngs[2]))
        og = sample_surface(obj_gt, n, rngs[3])
        d_p, d_g = nn_distances(op, og)
        out.update(
            obj_cd_cm2=chamfer_cm2(d_p, d_g),
            obj_fscore_5mm=fscore(d_p, d_g, 0.005, eps),
            obj_fscore_10mm=fscore(d_p, d_g, 0.010, eps),
        )
        hand_al, obj_al = (
            Mesh(al.apply(np.asarray(m.vertices, dtype=np.float64)), np.asarray(m.faces))
            for m in (hand_pred, obj_pred)
        )
        contact = contact_metrics_reference if reference else contact_metrics
        out.update(contact(hand_al, obj_al, settings.voxel))
    out["align_iterations"] = al.iterations
    out["align_converged"] = al.converged
    return out


def sample_seed(base: int, sample_id: str) -> int:
    """Per-sample seed: independent of job count and order."""
    return (base * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**32


def score_sample(files: SampleFiles, settings: EvalSettings) -> dict:
    """One per-sample row (keys: id + ROW_KEYS; None where not computable)."""
    from gsdf_eval.metrics import center_error_cm, joint_error_cm, joint_error_rel_cm

    units = settings.units
    row = {"id": files.sample_id, **dict.fromkeys(ROW_KEYS)}
    if files.hand_pred is not None:
        hand_pred, hand_gt = load_mesh(files.hand_pred, units), load_mesh(files.hand_gt, units)
        obj_pred = obj_gt = None
        if files.obj_pred is not None:
            obj_pred, obj_gt = load_mesh(files.obj_pred, units), load_mesh(files.obj_gt, units)
        res = score_pair(
            hand_pred,
            hand_gt,
            obj_pred,
            obj_gt,
            settings,
            sample_seed(settings.seed, files.sample_id),
        )
        t = res.pop("align_translation")
        row.update({k: v for k, v in res.items() if k in row})
        row.update(align_tx=t[0], align_ty=t[1], align_tz=t[2])
    elif files.obj_pred is not None:
        # no hand to align with: object metrics on the raw prediction
        from gsdf_eval.align import sample_surface
        from gsdf_eval.metrics import chamfer_cm2, fscore
        from gsdf_eval.nn import nn_distances

        rng = np.random.default_rng(sample_seed(settings.seed, files.sample_id))
        op = sample_surface(load_mesh(files.obj_pred, units), settings.n_points, rng)
        og = sample_surface(load_mesh(files.obj_gt, units), settings.n_points, rng)
        d_p, d_g = nn_distances(op, og)
        eps = 1e-7 if settings.protocol == "gsdf" else 0.0
        row.update(
            obj_cd_cm2=chamfer_cm2(d_p, d_g),
            obj_fscore_5mm=fscore(d_p, d_g, 0.005, eps),
            obj_fscore_10mm=fscore(d_p, d_g, 0.010, eps),
        )
    if files.ann_pred is not None and files.ann_gt is not None:
        ap, ag = load_annotation(files.ann_pred, units), load_annotation(files.ann_gt, units)
        if ap.joints is not None and ag.joints is not None:
            row["hand_joint_err_cm"] = joint_error_cm(ap.joints, ag.joints)
            row["hand_joint_err_rel_cm"] = joint_error_rel_cm(ap.joints, ag.joints)
        if ap.obj_center is not None and ag.obj_center is not None:
            row["obj_center_err_cm"] = center_error_cm(ap.obj_center, ag.obj_center)
    elif files.ann_pred is not None and files.ann_gt is None:
        raise EvalInputError(f"{files.ann_pred}: prediction has no ground-truth JSON")
    return row


def _score_or_error(files: SampleFiles, settings: EvalSettings) -> tuple[dict | None, str | None]:
    try:
        return score_sample(files, settings), None
    except EvalInputError as exc:
        return None, str(exc)


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) == 0:
        return {"n": 0, "mean": None, "median": None}
    return {"n": len(arr), "mean": float(arr.mean()), "median": float(np.median(arr))}


def summarize(rows: list[dict]) -> dict:
    """metric -> {"value": paper statistic, "stat", "n", "mean", "median"} over rows."""
    metrics = {}
    for key, stat in SUMMARY_STATS.items():
        if key == "contact_ratio_pct":
            vals = [100.0 * bool(r["contact"]) for r in rows if r.get("contact") is not None]
        else:
            vals = [float(r[key]) for r in rows if r.get(key) is not None]
        entry = _stats(vals)
        entry["stat"] = stat
        entry["value"] = entry[stat]
        metrics[key] = entry
    return metrics


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name beside `path`, then rename over it: the scheme of
    `gsdf_data.files` (`.<name>.tmp-<pid><suffix>`), copied so that gsdf-eval depends on
    no other package of the project."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_text(rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", *ROW_KEYS], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: ("" if v is None else v) for k, v in r.items() if k in writer.fieldnames}
        )
    return buf.getvalue()


def run_set(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    jobs: int = 1,
    settings: EvalSettings = EvalSettings(),
    on_error: str = "stop",
    progress: bool = True,
    name: str | None = None,
) -> dict:
    """Score every prediction in pred_dir against gt_dir, in parallel (joblib processes).

    Writes out_dir/per_sample.csv and out_dir/summary.json (atomically) and returns the
    summary. on_error: "stop" raises EvalInputError at the first bad sample; "skip" records
    it (id and reason) in the summary and goes on.
    """
    from tqdm import tqdm

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    samples, gt_only = discover(pred_dir, gt_dir)
    expected = gt_counts(gt_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if jobs == 1:  # in this process, without joblib's start-up (about 0.3 s of imports)
        results = (_score_or_error(s, settings) for s in samples)
    else:
        from joblib import Parallel, delayed

        tasks = (delayed(_score_or_error)(s, settings) for s in samples)
        results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
    rows, skipped = [], []
    bar = tqdm(total=len(samples), desc="gsdf-eval", unit="sample", disable=not progress)
    try:
        for files, (row, err) in zip(samples, results, strict=True):
            bar.update(1)
            if err is not None:
                if on_error == "stop":
                    raise EvalInputError(err)
                skipped.append({"id": files.sample_id, "reason": err})
                continue
            rows.append(row)
    finally:
        bar.close()

    summary = {
        "name": name or out_dir.resolve().name,
        "protocol": settings.protocol,
        # every GT sample counts: a sample without a prediction is a partial run, not a
        # smaller test set (`gsdf-eval table` marks it)
        "n_expected": expected["samples"],
        "n_predictions": len(samples),
        "n_scored": len(rows),
        "skipped": skipped,
        "gt_without_prediction": gt_only,
        "settings": {
            "n_points": settings.n_points,
            "max_iter": settings.max_iter,
            "voxel_m": settings.voxel,
            "seed": settings.seed,
            "protocol": settings.protocol,
            "units": settings.units,
        },
        "metrics": summarize(rows),
        "per_sample_csv": "per_sample.csv",
    }
    for key, entry in summary["metrics"].items():
        entry["n_expected"] = expected[EXPECTED_FROM[key]]
    _write_atomic(out_dir / "per_sample.csv", _csv_text(rows))
    _write_atomic(out_dir / "summary.json", json.dumps(_finite(summary), indent=2) + "\n")
    return summary


def _finite(obj):
    """JSON-safe copy: NaN/inf floats become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
