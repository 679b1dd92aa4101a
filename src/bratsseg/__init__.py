"""bratsseg: brain-tumour segmentation of BraTS-format MRI with small, fast U-Nets."""

from bratsseg.errors import BratsSegError
from bratsseg.labels import BRATS2021, BRATS2023, REGIONS, LabelConvention, get_convention

__version__ = "0.1.0"

__all__ = [
    "BRATS2021",
    "BRATS2023",
    "REGIONS",
    "BratsSegError",
    "LabelConvention",
    "__version__",
    "get_convention",
]
