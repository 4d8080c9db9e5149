"""torch-mwt: Modularizing while Training (Qi et al., ICSE 2024).

The pipeline: ``create_model`` -> ``make_modular`` -> ``train`` -> ``modularize`` ->
``extract_module`` / ``reuse``.
"""

from mwt.data import list_datasets, load_dataset
from mwt.errors import CheckpointError, DatasetNotFoundError, MwtError
from mwt.gates import count_gated_kernels, is_modular, make_modular
from mwt.losses import cohesion_loss, coupling_loss
from mwt.models import create_model, list_models, register_model
from mwt.train import TrainConfig, TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DatasetNotFoundError", "MwtError", "TrainConfig", "TrainResult",
    "cohesion_loss", "count_gated_kernels", "coupling_loss", "create_model", "evaluate",
    "is_modular", "list_datasets", "list_models", "load_dataset", "make_modular",
    "register_model", "train",
]
