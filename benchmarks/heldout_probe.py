"""Does a trained model use the other frames? Camera and point errors on held-out chunks against
the best frame-blind predictor.

    .venv/bin/python benchmarks/heldout_probe.py WEIGHTS.safetensors [--sequences 6] [--chunks 2]
        [--scene city] [--threads 1]

Renders `--sequences` worlds with the training recipe (`scal3r.train.data.render_sequence`) but
seeds ≥ 100 000 (never trained on), at the resolution and chunking stored in the weights' metadata,
runs the synchronised chunks without gradients and prints, over the non-reference frames:

- `t_err`: mean L1 of the predicted translation (last refinement, normalised units);
- `t_blind`: the same for the per-component median translation of these very targets at each
  position in the chunk, i.e. the best any predictor that ignores the images can do (it knows the
  frame's place in the chunk and is fitted on the test targets, so it is optimistic); a model that
  has not learnt relative pose sits at t_err ≈ t_blind;
- `t_spread`: spread of the predicted translations over a chunk's frames / that of the true ones
  (0: one pose for every frame, the collapse of docs/training.md);
- `r_err` / `r_blind` / `r_ratio`: the same for the rotation angle to the reference frame, in
  degrees (the blind predictor: the median angle at each position);
- `t_ratio` = t_err / t_blind (< 1: the camera head uses the frames), and `t_corr`, the correlation of
  predicted and true translation components;
- `points_ref` / `points_own`: median distance of the predicted world points to the true points in
  the reference frame / in each frame's own camera frame (a model that has not learnt cross-frame
  geometry predicts own-frame points: points_own < points_ref).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights")
    p.add_argument("--sequences", type=int, default=6)
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--scene", default="city", choices=["city", "walk"])
    p.add_argument("--first-seed", type=int, default=200_000, help="held-out worlds: seeds ≥ 100 000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--block-size", type=int, help="frames per chunk (default: the training run's)")
    p.add_argument("--overlap", type=int, help="frames shared by chunks (default: the training run's)")
    p.add_argument("--step-scale", type=float, nargs=2, metavar=("LO", "HI"),
                   help="speed range, x the scene's metres per frame (default: the training run's final one)")
    from scal3r.pipeline.config import POSE_REFINEMENTS

    p.add_argument("--pose-refinement", choices=POSE_REFINEMENTS, default="none",
                   help="photometric: the poses refined by direct alignment (scal3r.geometry.photometric)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from scal3r import Scal3R
    from scal3r.chunks import chunk_ranges, reference_first_order
    from scal3r.engine.differentiable import forward_chunks
    from scal3r.geometry.camera import invert_rigid
    from scal3r.model.bundled import read_stored_model
    from scal3r.train.data import EVAL_SEED_START, chunk_targets, render_sequence
    from scal3r.train.trainer import read_train_config

    if a.first_seed < EVAL_SEED_START:
        raise SystemExit(f"held-out seeds start at {EVAL_SEED_START}")
    stored = read_stored_model(a.weights)
    from scal3r.errors import InputError

    try:
        data = read_train_config(a.weights).data
    except InputError as e:
        raise SystemExit(str(e)) from None
    overrides = {k: v for k, v in (("block_size", a.block_size), ("overlap", a.overlap),
                                   ("step_scale", tuple(a.step_scale) if a.step_scale else None)) if v is not None}
    data = dataclasses.replace(data, **overrides)
    model = Scal3R(stored.config)
    model.load_checkpoint(a.weights)
    model.eval()

    pred_t, true_t, pred_q, true_q, ref_err, own_err = [], [], [], [], [], []
    for i in range(a.sequences):
        seed = a.first_seed + i
        rng = np.random.default_rng(seed)
        seq = render_sequence(data, rng, data.frames_for(a.chunks), (seed, seed + 1), scene=a.scene)
        fed = [reference_first_order(s, e) for s, e in chunk_ranges(len(seq), data.block_size, data.overlap)]
        targets = [chunk_targets(seq, f, data.max_depth) for f in fed]
        with torch.no_grad():
            outs = forward_chunks(model, [t["images"] for t in targets], activation_checkpointing=False)
        for frames, out, tgt in zip(fed, outs, targets):
            if a.pose_refinement == "photometric":
                from scal3r.geometry.photometric import refine_pose_encoding

                out["pose_enc"] = refine_pose_encoding(tgt["images"], out["pose_enc"], out["depth"],
                                                       out["depth_conf"], frames)
            pred_t.append(out["pose_enc"][1:, :3].numpy())
            true_t.append(tgt["pose_enc"][1:, :3].numpy())
            pred_q.append(out["pose_enc"][1:, 3:7].numpy())
            true_q.append(tgt["pose_enc"][1:, 3:7].numpy())
            valid = tgt["valid"].numpy()
            pts = out["world_points"].numpy()
            ref_err.append(np.linalg.norm(pts - tgt["world_points"].numpy(), axis=-1)[valid])
            # The same points in each frame's own camera frame.
            c2w = seq.c2w[list(frames)]
            own_from_ref = invert_rigid(c2w) @ c2w[0]
            own = np.einsum("sij,shwj->shwi", own_from_ref[:, :3, :3], tgt["world_points"].numpy()) \
                + own_from_ref[:, None, None, :3, 3] / float(tgt["scale"])
            own_err.append(np.linalg.norm(pts - own, axis=-1)[valid])
    # (chunks, positions, 3): the blind predictor is a median per position in the chunk.
    P, T = np.stack(pred_t), np.stack(true_t)
    t_err = float(np.abs(P - T).mean())
    t_blind = float(np.abs(np.median(T, axis=0, keepdims=True) - T).mean())
    corr = float(np.corrcoef(P.ravel(), T.ravel())[0, 1])
    spread = float(P.std(axis=1).sum(-1).mean() / max(T.std(axis=1).sum(-1).mean(), 1e-12))

    def angle_deg(q):  # rotation angle of unit quaternions (xyzw), (..., 4) → (...)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        return np.degrees(2 * np.arccos(np.clip(np.abs(q[..., 3]), 0, 1)))

    def relative_angle_deg(a, b):
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(-1)), 0, 1)))

    Q, TQ = np.stack(pred_q), np.stack(true_q)
    r_err = float(relative_angle_deg(Q, TQ).mean())
    true_angle = angle_deg(TQ)
    r_blind = float(np.abs(np.median(true_angle, axis=0, keepdims=True) - true_angle).mean())
    print(json.dumps({
        "weights": a.weights, "step": stored.step, "pose_refinement": a.pose_refinement, "sequences": a.sequences, "chunks": a.chunks,
        "scene": a.scene, "resolution": [data.width, data.height], "block_size": data.block_size,
        "step_scale": list(data.step_scale),
        "t_err": round(t_err, 4), "t_blind": round(t_blind, 4), "t_ratio": round(t_err / t_blind, 3),
        "t_corr": round(corr, 3), "t_spread": round(spread, 3),
        "r_err": round(r_err, 3), "r_blind": round(r_blind, 3), "r_ratio": round(r_err / max(r_blind, 1e-9), 3),
        "points_ref": round(float(np.median(np.concatenate(ref_err))), 3),
        "points_own": round(float(np.median(np.concatenate(own_err))), 3),
    }))


if __name__ == "__main__":
    main()
