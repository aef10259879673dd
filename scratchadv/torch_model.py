"""The library's architectures as ``torch.nn.Module``s: :mod:`scratchadv.frameworks.torch`.

Kept under this name for existing callers; importing it does not import torch.
"""
from .frameworks.torch import (build_module, from_torch, infer_architecture, require_torch,
                               to_torch, torch_predict)

__all__ = ["require_torch", "build_module", "to_torch", "from_torch", "torch_predict",
           "infer_architecture"]
