from setuptools import setup, find_packages

import re
from pathlib import Path

# JAX 0.12 needs Python >= 3.12; on 3.11 the last release for it (same APIs used here)
JAX = ["jax==0.12.0.1; python_version >= '3.12'", "jaxlib==0.12.0.1; python_version >= '3.12'",
       "jax==0.10.2; python_version == '3.11'", "jaxlib==0.10.2; python_version == '3.11'"]

VERSION = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("scratchadv").joinpath("__init__.py").read_text()).group(1)

setup(
    name="scratchadv",
    version=VERSION,
    description="A CNN from scratch in NumPy + autograd: training, adversarial attacks and defenses on MNIST",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["scratchadv", "scratchadv.*"]),
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "autograd>=1.6", "matplotlib>=3.5"],
    extras_require={
        # what the tests use beside the library; reference implementations are pinned, and
        # the library itself never imports them
        "test": ["pytest>=7", "hypothesis>=6",
                 "keras==3.15.1",                    # the slides' Keras model (torch backend)
                 "pyautoattack==0.2.0",              # the original AutoAttack (fra31/auto-attack)
                 "foolbox==3.3.4",                   # CW-L2, DeepFool references
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"]   # the notebook
                + JAX,                               # `scratchadv verify` against JAX
        "torch": ["torch==2.13.0"],
        "jax": JAX,                                  # CPU wheels: jaxlib ships the CPU backend
        "tensorflow": ["tensorflow-cpu==2.21.0"],
    },
    entry_points={"console_scripts": ["scratchadv=scratchadv.cli:main"]},
)
