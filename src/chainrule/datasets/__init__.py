"""Data sets: the IDX file format, MNIST (shipped with the package) and downloads of its relatives.

>>> from chainrule.datasets import load_mnist
>>> (x_train, y_train), (x_test, y_test) = load_mnist()
>>> x_train.shape, y_test.shape
((60000, 784), (10000,))
"""

from .download import DATASETS, DatasetSpec, DownloadError, fetch_idx_dataset
from .idx import read_idx, write_idx
from .mnist import IDX_FILES, load_mnist

__all__ = [
    "DATASETS",
    "IDX_FILES",
    "DatasetSpec",
    "DownloadError",
    "fetch_idx_dataset",
    "load_mnist",
    "read_idx",
    "write_idx",
]
