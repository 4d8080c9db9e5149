"""The registered CNNs: vgg16, resnet18, simcnn, rescnn (import order registers them)."""

from mwt.models import rescnn, resnet, simcnn, vgg  # noqa: F401
from mwt.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
