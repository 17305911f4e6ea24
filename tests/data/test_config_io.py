"""gsdf_data.config_io: every configuration survives JSON and back, equal to the original."""

import json

import pytest

from gsdf_data.config_io import from_dict, to_dict
from gsdf_data.filter import FilterConfig
from gsdf_data.prepare import PrepareConfig
from gsdf_data.sampling import SamplingConfig


def _round_trip(cfg):
    return from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg))))


@pytest.mark.parametrize(
    "cfg",
    [
        PrepareConfig(),
        PrepareConfig(filter=None, sampling=SamplingConfig(mesh_fractions=None)),
        PrepareConfig(sampling=SamplingConfig(variances=(0.01, 0.001), n=1000)),
        FilterConfig(resolution=64),
    ],
)
def test_data_configs_round_trip(cfg):
    back = _round_trip(cfg)
    assert back == cfg and hash(back) == hash(cfg)  # tuples again, so still hashable


def test_model_and_meshing_configs_round_trip():
    pytest.importorskip("torch")
    from gsdf_model.config import get_preset
    from gsdf_model.meshing import MeshingConfig

    for name in ("obman", "dexycb-video", "k1", "v1", "single", "tiny"):
        cfg = get_preset(name)
        assert _round_trip(cfg) == cfg
    assert _round_trip(MeshingConfig(resolution=64)) == MeshingConfig(resolution=64)


def test_unknown_field_is_refused_by_name():
    d = to_dict(PrepareConfig())
    d["sampling"]["n_pionts"] = 3
    with pytest.raises(ValueError, match="n_pionts"):
        from_dict(PrepareConfig, d)
