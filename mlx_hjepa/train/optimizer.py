"""AdamW with PyTorch's semantics: bias correction, decoupled decay, no decay on 1-D parameters.

MLX's own AdamW defaults to no bias correction and keeps weight decay as a Python float,
so a decay schedule would be frozen into a compiled step; here lr and wd are arguments
(arrays computed from the step counter) and the moments live in `state`.
"""

import mlx.core as mx
from mlx.utils import tree_map, tree_map_with_path


def decay_mask(params):
    """1.0 for weights that get decay, 0.0 for biases, norms and other 1-D parameters."""
    return tree_map_with_path(
        lambda path, p: 0.0 if (p.ndim <= 1 or path.endswith("bias") or "norm" in path) else 1.0, params)


class AdamW:
    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8):
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.mask = decay_mask(params)
        self.state = {
            "step": mx.array(0, dtype=mx.int32),
            "m": tree_map(mx.zeros_like, params),
            "v": tree_map(mx.zeros_like, params),
        }

    def update(self, params, grads, lr, weight_decay):
        """Returns the new parameters; advances `state`."""
        b1, b2, eps = self.beta1, self.beta2, self.eps
        t = (self.state["step"] + 1).astype(mx.float32)
        c1, c2 = 1.0 - mx.power(b1, t), 1.0 - mx.power(b2, t)
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, self.state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, self.state["v"], grads)

        def step(p, m, v, decay):
            p = p * (1.0 - lr * weight_decay * decay) if decay else p
            return p - lr * (m / c1) / (mx.sqrt(v / c2) + eps)

        new = tree_map(step, params, m, v, self.mask)
        self.state.update(step=self.state["step"] + 1, m=m, v=v)
        return new
