"""The paper's published figures (Qi et al., ICSE 2024, section 4), in one place.

Every number an experiment table shows beside ours comes from here, keyed by the table it is
printed in. They were measured on NVIDIA A100 GPUs, 200 epochs, CIFAR-10 and SVHN (section 4.1):
tables label them ``SOURCE`` so that nobody mistakes them for our runs. Accuracies, KRR and
kernel shares are in %, cohesion and coupling in [0, 1], MACs ("FLOPs" in the paper, counted by
fvcore as multiply-accumulates) in millions. Table 1 (alpha, beta) lives in
``mwt.config.PAPER_ALPHA_BETA``, which training already reads.
"""

SOURCE = "paper (GPU, 200 epochs)"
PAPER_DATASETS = ("cifar10", "svhn")
MODEL_NAMES = {"vgg16": "VGG16", "resnet18": "ResNet18", "simcnn": "SimCNN", "rescnn": "ResCNN"}
DATASET_NAMES = {"cifar10": "CIFAR10", "svhn": "SVHN"}

# Table 2: standard vs modular training and the modules at tau 0.9 ("#Kernels" counts every
# conv kernel, the first conv's too).
TABLE2 = {
    ("vgg16", "cifar10"): {"kernels": 4224, "standard_acc": 92.29, "modular_acc": 90.86,
                           "krr": 17.28, "cohesion": 0.9758, "coupling": 0.1751},
    ("vgg16", "svhn"): {"kernels": 4224, "standard_acc": 95.84, "modular_acc": 94.74,
                        "krr": 14.15, "cohesion": 0.9687, "coupling": 0.2246},
    ("resnet18", "cifar10"): {"kernels": 3904, "standard_acc": 93.39, "modular_acc": 91.59,
                              "krr": 24.74, "cohesion": 0.9437, "coupling": 0.2412},
    ("resnet18", "svhn"): {"kernels": 3904, "standard_acc": 95.84, "modular_acc": 95.95,
                           "krr": 25.89, "cohesion": 0.9663, "coupling": 0.3115},
}

# Table 3: CNNSplitter's composed modules vs MwT's modular model (SimCNN, ResCNN).
TABLE3 = {
    ("simcnn", "cifar10"): {"standard_acc": 89.77,
                            "cnnsplitter_acc": 86.07, "cnnsplitter_coupling": 0.5277,
                            "cnnsplitter_cohesion": 0.9326, "cnnsplitter_krr": 61.96,
                            "mwt_acc": 88.84, "mwt_coupling": 0.1372, "mwt_cohesion": 0.8682,
                            "mwt_krr": 11.58},
    ("simcnn", "svhn"): {"standard_acc": 95.41,
                         "cnnsplitter_acc": 93.85, "cnnsplitter_coupling": 0.6161,
                         "cnnsplitter_cohesion": 0.9619, "cnnsplitter_krr": 52.79,
                         "mwt_acc": 93.56, "mwt_coupling": 0.1434, "mwt_cohesion": 0.9580,
                         "mwt_krr": 11.85},
    ("rescnn", "cifar10"): {"standard_acc": 90.41,
                            "cnnsplitter_acc": 85.64, "cnnsplitter_coupling": 0.5648,
                            "cnnsplitter_cohesion": 0.8462, "cnnsplitter_krr": 58.26,
                            "mwt_acc": 89.82, "mwt_coupling": 0.2781, "mwt_cohesion": 0.9601,
                            "mwt_krr": 21.52},
    ("rescnn", "svhn"): {"standard_acc": 95.06,
                         "cnnsplitter_acc": 93.52, "cnnsplitter_coupling": 0.6046,
                         "cnnsplitter_cohesion": 0.8828, "cnnsplitter_krr": 54.03,
                         "mwt_acc": 93.88, "mwt_coupling": 0.3306, "mwt_cohesion": 0.9731,
                         "mwt_krr": 13.37},
}

# Table 4: time. MwT = modular training + modularizing; modularizing after training = standard
# training + CNNSplitter's search (seconds per epoch x epochs; totals in minutes).
TABLE4 = {
    ("simcnn", "cifar10"): {"modular_s_per_epoch": 24, "epochs": 200, "modularizing_s": 14,
                            "mwt_total_min": 80, "standard_s_per_epoch": 12,
                            "cnnsplitter_s_per_generation": 83, "cnnsplitter_generations": 123,
                            "after_training_total_min": 210},
    ("simcnn", "svhn"): {"modular_s_per_epoch": 36, "epochs": 200, "modularizing_s": 21,
                         "mwt_total_min": 120, "standard_s_per_epoch": 17,
                         "cnnsplitter_s_per_generation": 95, "cnnsplitter_generations": 79,
                         "after_training_total_min": 182},
    ("rescnn", "cifar10"): {"modular_s_per_epoch": 28, "epochs": 200, "modularizing_s": 15,
                            "mwt_total_min": 94, "standard_s_per_epoch": 14,
                            "cnnsplitter_s_per_generation": 80, "cnnsplitter_generations": 185,
                            "after_training_total_min": 293},
    ("rescnn", "svhn"): {"modular_s_per_epoch": 41, "epochs": 200, "modularizing_s": 21,
                         "mwt_total_min": 137, "standard_s_per_epoch": 20,
                         "cnnsplitter_s_per_generation": 93, "cnnsplitter_generations": 107,
                         "after_training_total_min": 233},
}

_RQ3_KEYS = (("vgg16", "cifar10"), ("vgg16", "svhn"), ("resnet18", "cifar10"),
             ("resnet18", "svhn"))


def _by_m(rows: dict, keys=_RQ3_KEYS) -> dict:
    return {m: dict(zip(keys, values)) for m, values in rows.items()}


# Table 5: kernel share (KRR) of the mixed modules of M-class sub-tasks, %.
TABLE5 = _by_m({
    2: (30.34, 27.38, 35.94, 42.44), 3: (43.39, 38.65, 50.51, 68.18),
    4: (52.93, 47.00, 65.12, 70.38), 5: (58.29, 53.15, 71.41, 72.28),
    6: (63.75, 57.31, 74.58, 74.01), 7: (72.57, 61.27, 79.79, 78.36),
    8: (79.88, 63.65, 82.35, 79.56), 9: (88.34, 66.25, 86.87, 80.60),
    10: (94.11, 68.61, 88.75, 81.52),
})

# Table 6: MACs of the modules (millions) and the reduction against the model (%).
TABLE6 = _by_m({
    2: ((70.97, 77.48), (31.85, 89.89), (129.76, 76.77), (136.15, 75.62)),
    3: ((121.21, 61.54), (52.93, 83.20), (189.50, 66.07), (329.49, 41.00)),
    4: ((166.35, 47.21), (73.31, 76.73), (336.49, 39.75), (336.41, 39.77)),
    5: ((179.93, 42.90), (85.82, 72.77), (360.62, 35.43), (344.77, 38.27)),
    6: ((198.71, 36.94), (91.03, 71.11), (376.75, 32.54), (352.28, 36.93)),
    7: ((230.41, 26.88), (99.47, 68.43), (398.82, 28.59), (372.42, 33.32)),
    8: ((249.33, 20.87), (103.30, 67.22), (407.57, 27.03), (377.54, 32.40)),
    9: ((279.40, 11.33), (107.36, 65.93), (432.79, 22.51), (382.93, 31.44)),
    10: ((293.88, 6.74), (111.10, 64.74), (442.67, 20.74), (388.09, 30.51)),
})
FULL_MACS = {"vgg16": 315.11, "resnet18": 558.50}  # millions, 3x32x32 input

# Table 7: accuracy on the sub-task of the standard model (M-ACC) and of the fine-tuned module
# (m-ACC), and the loss M-ACC - m-ACC, %.
TABLE7 = _by_m({
    2: ((99.35, 99.20, 0.15), (98.89, 99.17, -0.28), (99.40, 99.30, 0.10),
        (99.34, 99.33, 0.01)),
    3: ((98.23, 97.40, 0.83), (98.48, 98.58, -0.10), (98.23, 97.23, 1.00),
        (98.91, 98.82, 0.09)),
    4: ((96.70, 94.98, 1.72), (97.35, 97.28, 0.07), (96.63, 95.50, 1.13),
        (97.96, 97.64, 0.32)),
    5: ((95.22, 93.82, 1.40), (97.01, 97.01, 0.00), (95.66, 94.34, 1.32),
        (97.47, 97.55, -0.08)),
    6: ((92.53, 91.05, 1.48), (96.73, 96.44, 0.29), (93.77, 91.27, 2.50),
        (96.98, 96.92, 0.06)),
    7: ((92.43, 90.90, 1.53), (96.44, 95.78, 0.66), (93.60, 91.86, 1.74),
        (96.74, 96.45, 0.29)),
    8: ((92.28, 91.03, 1.25), (96.18, 95.52, 0.66), (93.48, 91.71, 1.77),
        (96.32, 96.25, 0.07)),
    9: ((92.36, 90.89, 1.47), (96.04, 95.20, 0.84), (93.52, 91.48, 2.04),
        (96.09, 96.00, 0.09)),
    10: ((92.29, 90.86, 1.43), (95.84, 94.74, 1.10), (93.39, 91.59, 1.80),
         (95.84, 95.95, -0.11)),
})

# Table 8: kernel share of the modules of M-class sub-tasks, (CNNSplitter, MwT), %.
TABLE8 = _by_m({
    2: ((84.61, 20.34), (76.04, 34.13), (79.57, 28.69), (78.26, 19.98)),
    3: ((93.09, 30.77), (86.88, 43.10), (89.79, 39.28), (89.86, 42.33)),
    4: ((97.09, 33.80), (93.42, 51.49), (95.22, 53.46), (94.73, 45.64)),
    5: ((98.63, 37.67), (96.64, 56.97), (97.69, 56.30), (97.50, 47.18)),
    6: ((99.34, 41.25), (98.37, 64.69), (98.79, 58.62), (98.72, 49.34)),
    7: ((99.74, 52.00), (99.05, 68.75), (99.32, 66.45), (99.51, 51.04)),
    8: ((99.88, 57.14), (99.43, 72.55), (99.77, 68.37), (99.81, 52.37)),
    9: ((99.95, 67.52), (99.69, 75.94), (99.88, 72.44), (99.86, 53.72)),
    10: ((99.98, 72.40), (99.76, 78.82), (99.91, 74.22), (99.88, 54.71)),
}, keys=(("simcnn", "cifar10"), ("simcnn", "svhn"), ("rescnn", "cifar10"), ("rescnn", "svhn")))

# RQ4, the tau sweep (ResNet18-CIFAR10; only the ends of the sweep are printed in the paper,
# the rest is on the project's web page): modules' KRR %, cohesion, coupling, and a 3-class
# reuse's kernel share % and accuracy %.
RQ4_TAU = {
    0.1: {"krr": 37.36, "cohesion": 0.8572, "coupling": 0.3594, "reuse_kernel_share": 72.57,
          "reuse_acc": 97.77},
    0.9: {"krr": 24.74, "cohesion": 0.9437, "coupling": 0.2412, "reuse_kernel_share": 50.51,
          "reuse_acc": 97.23},
}
RQ4_MODEL = ("resnet18", "cifar10")
RQ4_ALPHAS = (0.3, 0.5, 0.7, 0.9)
RQ4_BETAS = (1.2, 1.5, 1.7, 2.0)

# Figures 5 and 6 are curves without printed values; what the paper reads from them.
FIGURE5 = ("VGG16-CIFAR10: the modular model's coupling falls fast in the first 50 epochs and "
           "converges, the standard model's stays high; both keep a high cohesion; the modular "
           "model's kernel rate falls like its coupling; final accuracy 90.86% (modular) and "
           "92.29% (standard).")
FIGURE6 = ("ResNet18-CIFAR10: a larger alpha lowers the cohesion loss; coupling loss and "
           "accuracy hardly change for alpha in 0.5..0.9 (alpha 0.3 leaves a higher coupling "
           "loss and a noisier accuracy); a larger beta raises the cohesion loss and leaves "
           "coupling loss and accuracy alike. Defaults alpha 0.5, beta 1.5.")


def label(model: str, dataset: str) -> str:
    """The paper's name of a model-dataset pair, e.g. ``VGG16-CIFAR10``."""
    return f"{MODEL_NAMES.get(model, model)}-{DATASET_NAMES.get(dataset, dataset)}"


def pairs_for(table: dict, model: str, dataset: str) -> list[tuple[str, str]]:
    """The paper's rows to show beside our (model, dataset): the same pair when the paper has
    it, else the model on each of the paper's datasets (none when the paper lacks the model)."""
    if (model, dataset) in table:
        return [(model, dataset)]
    return [(model, d) for d in PAPER_DATASETS if (model, d) in table]


# The methods comparison (`mwt experiment methods`): what the newer methods' papers publish.
# MODA (Ngo et al., ICSE 2026, arXiv 2411.01074) re-ran MwT beside itself on VGG16-CIFAR10:
# test accuracy (mean ± std) and the hours of a 200-epoch training run.
MODA_SOURCE = "MODA paper (arXiv 2411.01074)"
MODA_VGG16_CIFAR10 = {
    "standard": {"acc": 92.62, "acc_std": 0.43, "hours": 0.81},
    "mwt": {"acc": 90.55, "acc_std": 0.13, "hours": 1.38},
    "moda": {"acc": 91.86, "acc_std": 0.23, "hours": 1.13},
}
# NeMo (Bi, Qi et al., arXiv 2508.11348, 2025): its claims against MwT, averaged over its
# models and datasets.
NEMO_SOURCE = "NeMo paper (arXiv 2508.11348)"
NEMO_CLAIMS = {"module_size_reduction_vs_mwt": 58.1, "module_acc_gain_vs_mwt": 1.72}

# NeMo's Transformers. Its per-model tables were not in the material we could read (the paper's
# abstract and the README of XiaohanBi-Hub/NeMo): only the averages above, over these two and
# its four CNNs, can stand beside our ViT rows.
NEMO_TRANSFORMERS = ("ViT-S and DeiT-S (32x32 inputs, patch 4, hidden 384, MLP 1536) on "
                     "CIFAR-10 and SVHN")


def nemo_transformer_note() -> str:
    """What NeMo publishes about Transformers, labelled, for a table with ViT rows."""
    return (f"{NEMO_SOURCE} modularizes {NEMO_TRANSFORMERS}; its per-model figures were not "
            "available to us, only its averages over these two and four CNNs: modules "
            f"{NEMO_CLAIMS['module_size_reduction_vs_mwt']}% smaller than MwT's and "
            f"+{NEMO_CLAIMS['module_acc_gain_vs_mwt']} points of module accuracy. Our "
            "vit_tiny rows are MwT's on narrower ViTs (units: attention heads and MLP "
            "neurons; the '#kernels' column counts them).")
