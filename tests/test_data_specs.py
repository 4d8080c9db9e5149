"""The built-in datasets are each described by one DatasetSpec; every table is derived from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mwt.data import DATASETS, default_crop_padding, list_datasets, readers, registry
from mwt.data import download as dl
from mwt.data.builtin import BUILTIN_DATASETS, SPECS
from mwt.data.loaders import LOADERS
from mwt.data.spec import DatasetSpec, OfficialFile
from mwt.errors import MwtError


def test_every_builtin_spec_is_registered_under_its_names():
    assert sorted(SPECS) == list_datasets()
    for spec in BUILTIN_DATASETS:
        assert spec.name in DATASETS
        for alias in (spec.name.upper(), *spec.aliases):
            assert registry.canonical_name(alias) == spec.name


@pytest.mark.parametrize("spec", BUILTIN_DATASETS, ids=lambda s: s.name)
def test_spec_is_consistent(spec: DatasetSpec):
    assert spec.format in LOADERS
    assert spec.splits == ("train", "test")
    assert len(spec.mean) == len(spec.std) and all(s > 0 for s in spec.std)
    assert spec.augmentation.crop_padding == default_crop_padding(*spec.image_size)
    assert all(isinstance(f, OfficialFile) for files in spec.files.values() for f in files)
    if spec.classes is not None:
        assert len(set(spec.classes)) == len(spec.classes) >= 2
    if spec.package_dir is None:
        assert spec.how and spec.subdirs  # a user told how to get the files, and where we look
    with pytest.raises(TypeError):
        spec.files["validation"] = ()  # read-only, like the rest of the frozen spec


@pytest.mark.parametrize("spec", [s for s in BUILTIN_DATASETS if s.urls], ids=lambda s: s.name)
def test_sources_come_from_the_specs(spec: DatasetSpec):
    source = dl.SOURCES[spec.name]
    assert [source["base_url"], *source["fallback_urls"]] == list(spec.urls)
    assert source["files"] == {split: list(files) for split, files in spec.files.items()}
    assert source["extract_to"] == spec.extract_to
    if spec.format == "cifar":  # the reader's layout names the same archive and folder
        layout = readers.CIFAR_LAYOUT[spec.name]
        assert spec.extract_to == layout["folder"]
        assert {f.name for files in spec.files.values() for f in files} == {layout["archive"]}


def test_download_resolves_builtin_names_without_the_registry():
    assert dl._canonical("CIFAR-10") == "cifar10" and dl._canonical(" FMNIST ") == "fashion-mnist"
    with pytest.raises(MwtError, match=r"dataset 'imagenet' cannot be downloaded; "
                                       r"downloadable datasets: cifar10, cifar100"):
        dl._canonical("imagenet")
    # download.py imports neither the registry nor the loaders (which import it): no cycle.
    tree = ast.parse(Path(dl.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"mwt.data.registry", "mwt.data.loaders", "mwt.data"}


def test_old_tables_are_views_of_the_specs():
    for spec in BUILTIN_DATASETS:
        assert registry.NORMALIZATION[spec.name] == (spec.mean, spec.std)
        assert registry.AUGMENTATION[spec.name] == spec.augmentation
        if spec.package_dir is None:
            assert registry.SYSTEM_DIRS[spec.name] == list(spec.system_dirs)
