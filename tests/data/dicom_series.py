"""A DICOM series writer for tests (pydicom is imported only when it is called)."""

from __future__ import annotations

import numpy as np


def write_series(data: np.ndarray, folder, uid="1.2.3.4", first_k=0, first_suffix=".dcm"):
    """Axial slices of a RAS volume (1 mm, origin -98,-134,-72 like MNI152) as CT DICOM files.
    pixel[r, c] = data[X-1-c, Y-1-r, k]: rows go posterior (LPS +y), columns patient left (+x).
    `first_suffix` "" names the first file without .dcm (a DICOM file is recognised by its content)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    X, Y, _ = data.shape
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(folder / f"s{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = uid, "1.2.3", k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [98 - (X - 1), 134 - (Y - 1), -72 + first_k + k]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = Y, X, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.ascontiguousarray(data[::-1, ::-1, k].T.astype(np.int16)).tobytes()
        ds.save_as(str(folder / f"s{k:03d}{first_suffix if k == 0 else '.dcm'}"), enforce_file_format=True)
