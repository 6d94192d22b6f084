"""Packaging for recbole-micro.

The YAML defaults live in the top-level ``properties/`` folder (RecBole's layout) and the tuning
params files in ``hyper/``. Both are shipped inside the package (``recbole_micro/properties``,
``recbole_micro/hyper``) so that a non-editable ``pip install .`` finds them too;
``recbole_micro.registry`` looks in both places. The importers (``dataset_prep``) are a package of
their own, so ``python -m dataset_prep.import_mmrec`` works after any install.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="recbole-micro",
    version="0.1.0",
    description="Multimedia recommenders for RecBole: MICRO, LATTICE, VBPR, MMGCN and GRCN, with multimodal feature hooks",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_micro", "recbole_micro.*", "dataset_prep"])
    + ["recbole_micro.properties", "recbole_micro.hyper"],
    package_dir={"recbole_micro.properties": "properties", "recbole_micro.hyper": "hyper"},
    package_data={
        "recbole_micro.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml", "profiles/*.yaml"],
        "recbole_micro.hyper": ["*.hyper", "sensitivity/*.hyper"],
    },
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": read_requirements("requirements-dev.txt"), "faiss": ["faiss-cpu>=1.7.4,<1.9"]},
    py_modules=[],
    scripts=["run_recbole_micro.py"],
)
