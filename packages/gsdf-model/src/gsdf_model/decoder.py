"""DeepSDF-style SDF decoder: an MLP with a skip connection, weight norm, dropout and tanh.

Reference layout: 5 linear layers, hidden width 512, the input concatenated again before
layer 2, weight norm and dropout 0.2 on the hidden layers, tanh on the output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class SDFDecoder(nn.Module):
    """[e_v; e_kin] (…, in_dim) → signed distance (…) in network units, in (−1, 1)."""

    def __init__(
        self,
        in_dim: int,
        width: int = 512,
        n_layers: int = 5,
        skip: Sequence[int] = (2,),
        dropout: float = 0.2,
        use_weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.skip, self.dropout = tuple(skip), dropout
        dims = [in_dim] + [width] * (n_layers - 1) + [1]
        layers = []
        for i in range(n_layers):
            d_in = dims[i]
            # a layer fed by a skip concatenation: the previous layer outputs width − in_dim
            d_out = dims[i + 1] - in_dim if (i + 1) in self.skip else dims[i + 1]
            if d_out <= 0:
                raise ValueError(f"decoder width {width} too small for input {in_dim} at skip")
            lin = nn.Linear(d_in, d_out)
            layers.append(weight_norm(lin) if use_weight_norm else lin)
        self.layers = nn.ModuleList(layers)

    def forward(self, inp: Tensor) -> Tensor:
        x = inp
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.skip:
                x = torch.cat([x, inp], dim=-1)
            x = lin(x)
            if i < last:
                x = F.relu(x)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
        return torch.tanh(x).squeeze(-1)
