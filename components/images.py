"""Reading X-ray images from PNG, TIFF, DICOM or NIfTI files into (H, W) arrays in [0, 1], bone bright.

Intensities are min-max scaled, as the training DRRs are. A DICOM image has its rescale slope and
intercept applied and is inverted when its photometric interpretation is MONOCHROME1. A NIfTI
image's first axis is the image's x (columns), so its 2D array is transposed to (rows, columns).
"""

from pathlib import Path

import numpy as np

SUFFIXES = (".png", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz")


class ImageError(ValueError):
    """An image file that is missing, unreadable or not a 2D grey image; the message names the file."""


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_xray(path: str | Path) -> np.ndarray:
    """The (H, W) float32 image of ``path`` scaled to [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:
        raise ImageError(f"{path}: unsupported image type '{suffix}' (expected one of {', '.join(SUFFIXES)})")
    try:
        if suffix in (".dcm", ".dicom"):
            pixels = read_dicom(path)
        elif suffix in (".nii", ".nii.gz"):
            import nibabel

            pixels = np.asarray(nibabel.load(path).dataobj, dtype=np.float64).squeeze().T
        else:
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(
                    image.convert("I;16") if image.mode in ("I;16", "I;16B", "I") else image.convert("L"),
                    dtype=np.float64,
                )
    except ImageError:
        raise
    except Exception as error:
        raise ImageError(f"{path}: cannot be read as {suffix} ({error.__class__.__name__}: {error})") from error
    if pixels.ndim != 2 or min(pixels.shape) < 8:
        raise ImageError(
            f"{path}: expected a 2D grey image of at least 8x8 pixels, got an array of shape {pixels.shape}"
        )
    return scale_to_unit(pixels, path)


def read_dicom(path: Path) -> np.ndarray:
    import pydicom

    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise ImageError(f"{path}: a DICOM file without pixel data")
    pixels = dataset.pixel_array.astype(np.float64) * float(getattr(dataset, "RescaleSlope", 1.0)) + float(
        getattr(dataset, "RescaleIntercept", 0.0)
    )
    if getattr(dataset, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def scale_to_unit(pixels: np.ndarray, path: Path) -> np.ndarray:
    low, high = np.nanmin(pixels), np.nanmax(pixels)
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        raise ImageError(f"{path}: the image is blank (all pixels equal or not finite)")
    return ((pixels - low) / (high - low)).astype(np.float32)
