"""The out_proj loss in isolation: a 3-stage factorised RVQ trained on rank-4 data by its own loss only,
then the latent's relative error after 1, 2 and 3 stages. Needs `out_proj_weight`, which exists only at
commit 4893877 (absolute error, the numbers in README.md) and 88dd65b (relative error):

    git worktree add /tmp/rq 4893877 && PYTHONPATH=/tmp/rq python docs/results/residual_scale/out_proj_isolated.py
"""

import torch

from rotcodec.quantize import ResidualVQ

for values in ("unit", "raw"):
    for weight in (0.0, 1.0):
        for steps in (120, 300):
            torch.manual_seed(0)
            basis = torch.randn(4, 16) * 3.0
            rvq = ResidualVQ(
                16, 3, 64, codebook_dim=4, factorised_values=values, out_proj_weight=weight, dead_code_threshold=0.0
            )
            opt = torch.optim.Adam(rvq.parameters(), lr=1e-2)
            for _ in range(steps):
                x = (torch.randn(8, 32, 4) @ basis).transpose(1, 2)
                loss = rvq.train()(x).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
            x = (torch.randn(8, 64, 4) @ basis).transpose(1, 2)
            with torch.no_grad():
                rvq.eval()
                print(
                    values,
                    weight,
                    steps,
                    [
                        round(((rvq.decode(rvq.encode(x, n)) - x).pow(2).sum() / x.pow(2).sum()).item(), 3)
                        for n in (1, 2, 3)
                    ],
                )
