"""torch-mwt: Modularizing while Training (Qi et al., ICSE 2024).

The pipeline: ``create_model`` -> ``make_modular`` -> ``train`` -> ``modularize`` ->
``extract_module`` / ``reuse``.
"""

from mwt.config import RunSpec, TrainConfig
from mwt.data import list_datasets, load_dataset
from mwt.errors import CheckpointError, DatasetNotFoundError, MwtError, MwtWarning
from mwt.extract import extract_module
from mwt.extract_check import make_modular
from mwt.gates import count_gated_kernels, is_modular
from mwt.losses import cohesion_loss, coupling_loss
from mwt.macs import count_macs
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate
from mwt.models import create_model, list_models, register_model
from mwt.modularize import ModuleSet, modularize
from mwt.module_io import export_module, load_module, save_module
from mwt.reuse import ReusedModule, reuse
from mwt.train import TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DatasetNotFoundError", "ModuleSet", "MwtError", "MwtWarning",
    "ReusedModule", "RunSpec", "TrainConfig", "TrainResult", "cohesion_loss", "count_gated_kernels",
    "count_macs",
    "coupling_loss", "create_model", "evaluate", "export_module", "extract_module",
    "is_modular", "jaccard_cohesion", "jaccard_coupling", "kernel_retention_rate",
    "list_datasets", "list_models", "load_dataset", "load_module", "make_modular",
    "modularize", "register_model", "reuse", "save_module", "train",
]
