"""Data sets and loaders: IDX, the MNIST family, CSV and NumPy files, the embedded digits.

Every data problem raises :class:`DataError` naming the file and what is wrong.
"""

from .digits import load_digits
from .download import Checksums, DownloadError, download
from .errors import DataError
from .idx import idx_shape, load_idx, save_idx
from .mnist import DATASETS, cache_dir, load_mnist
from .prepare import PreparedData, prepare_data, validation_split
from .preprocess import Preprocessor, stratified_split
from .registry import NAMED, DataSource, Dataset, load_dataset, open_dataset
from .tabular import CSVTable, LabelColumn, load_csv, load_npy, load_npz, read_csv

__all__ = [
    "DATASETS", "NAMED", "CSVTable", "Checksums", "DataError", "DataSource", "Dataset",
    "DownloadError", "LabelColumn", "PreparedData", "Preprocessor", "cache_dir", "download",
    "idx_shape", "load_csv", "load_dataset", "load_digits", "load_idx", "load_mnist",
    "load_npy", "load_npz", "open_dataset", "prepare_data", "read_csv", "save_idx",
    "stratified_split", "validation_split",
]
