"""Reading DICOM headers, the DICOM vocabulary, and the identifier model of a source."""
