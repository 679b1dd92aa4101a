"""NIfTI input and output, case discovery for each BraTS naming, validation with clear errors."""

from bratsseg.io.discovery import (
    MODALITIES,
    NAMING_2021,
    NAMING_2023,
    Case,
    Discovery,
    Naming,
    case_from_files,
    discover_cases,
    find_case,
    get_naming,
)
from bratsseg.io.nifti import LoadedCase, header_essentials, load_case, make_nifti, open_nifti, save_nifti

__all__ = [
    "MODALITIES",
    "NAMING_2021",
    "NAMING_2023",
    "Case",
    "Discovery",
    "LoadedCase",
    "Naming",
    "case_from_files",
    "discover_cases",
    "find_case",
    "get_naming",
    "header_essentials",
    "load_case",
    "make_nifti",
    "open_nifti",
    "save_nifti",
]
