"""dpdfd_tf: differentially private data-free distillation for Keras/TensorFlow."""

import setuptools

setuptools.setup(
    name="dpdfd_tf",
    version="0.1.0",
    description="Differentially private data-free distillation (DPDFD) for Keras/TensorFlow",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["dpdfd_tf", "dpdfd_tf.*"]),
    python_requires=">=3.10,<3.12",
    # The measured working set (constraints.txt locks the rest). tensorflow is pinned exactly:
    # unpinned, pip backtracks through hundreds of MB per TensorFlow release.
    install_requires=[
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-privacy==0.9.0",
        "tensorflow-datasets==4.9.10",
        "dp-accounting==0.4.3",
        "absl-py>=1.4,<2",
        "numpy>=1.26,<2",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: Apache "
                 "Software License", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
