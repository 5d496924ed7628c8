import numpy as np
import pytest
from PIL import Image

from components.images import ImageError, read_xray
from tests.helpers import write_dicom


def ramp(height=32, width=48):
    return (np.arange(height * width).reshape(height, width) * 7 % 60000).astype(np.uint16)


def expected(pixels):
    pixels = pixels.astype(np.float64)
    return (pixels - pixels.min()) / (pixels.max() - pixels.min())


def test_16_bit_png_and_tiff_are_scaled_to_unit(tmp_path):
    pixels = ramp()
    Image.fromarray(pixels).save(tmp_path / "x.png")
    Image.fromarray(pixels).save(tmp_path / "x.tif")
    for name in ("x.png", "x.tif"):
        image = read_xray(tmp_path / name)
        assert image.shape == (32, 48) and image.dtype == np.float32
        assert np.allclose(image, expected(pixels), atol=1e-6)


def test_dicom_with_rescale_and_monochrome1(tmp_path):
    pixels = ramp()
    write_dicom(tmp_path / "a.dcm", pixels, slope=2.0, intercept=-100.0)
    assert np.allclose(read_xray(tmp_path / "a.dcm"), expected(pixels), atol=1e-6)
    write_dicom(tmp_path / "b.dcm", pixels, monochrome1=True)
    assert np.allclose(read_xray(tmp_path / "b.dcm"), 1 - expected(pixels), atol=1e-6)


def test_nifti_is_transposed_to_rows_and_columns(tmp_path):
    import nibabel

    pixels = ramp()
    nibabel.save(nibabel.Nifti1Image(pixels.T.astype(np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    assert np.allclose(read_xray(tmp_path / "x.nii.gz"), expected(pixels), atol=1e-6)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.png", None, "image file not found"),
        ("x.jpg2", b"...", "unsupported image type '.jpg2'"),
        ("broken.png", b"not a png", "cannot be read as .png"),
        ("broken.dcm", b"not dicom", "cannot be read as .dcm"),
    ],
)
def test_bad_images_name_the_file(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=message) as error:
        read_xray(tmp_path / name)
    assert str(tmp_path / name) in str(error.value)


def test_blank_image(tmp_path):
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="blank"):
        read_xray(tmp_path / "blank.png")
