"""Hand models on MANO's 16-joint tree: the user's MANO (without chumpy) and the procedural
hand the project ships; forward/inverse kinematics and skinning in torch.

    hand = load_hand(None)                      # ProceduralHand; or a MANO_RIGHT.pkl path
    out = hand(global_orient=(B, 3), finger_pose=(B, 45), betas=None, transl=None)
    out.vertices (B, V, 3), out.joints (B, 16, 3), out.transforms (B, 16, 4, 4),
    out.keypoints (B, 21, 3) paper order; hand.faces (closed), hand.faces_open
    hand.ik(keypoints) -> IKResult(local_rotmats, global_rotmats)
"""

from gsdf_data.hand.base import HandModel, HandOutput
from gsdf_data.hand.kinematics import KEYPOINT_FROM_MANO, KEYPOINT_NAMES, PARENTS, IKResult
from gsdf_data.hand.mano import MANOHand
from gsdf_data.hand.models import ProceduralHand, load_hand
from gsdf_data.hand.poses import random_rotations, sample_poses

__all__ = [
    "KEYPOINT_FROM_MANO",
    "KEYPOINT_NAMES",
    "PARENTS",
    "HandModel",
    "HandOutput",
    "IKResult",
    "MANOHand",
    "ProceduralHand",
    "load_hand",
    "random_rotations",
    "sample_poses",
]
