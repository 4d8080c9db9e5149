"""The registered models, one file per family: vgg.py (vgg16, simcnn), resnet.py, rescnn.py,
densenet.py, mobilenetv2.py, vit.py (transformer unit blocks in unit_blocks.py)."""

from mwt.models import densenet, mobilenetv2, rescnn, resnet, vgg, vit  # noqa: F401
from mwt.models.registry import ModelSpec, create_model, list_models, register_model
from mwt.models.torch_transformer import from_torch_transformer

__all__ = ["ModelSpec", "create_model", "list_models", "register_model",
           "from_torch_transformer"]
