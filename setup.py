from setuptools import setup, find_packages

import re
from pathlib import Path

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
        "test": ["pytest>=7", "hypothesis>=6"],
        "torch": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["scratchadv=scratchadv.cli:main"]},
)
