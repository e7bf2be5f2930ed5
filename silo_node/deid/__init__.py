"""De-identification: HIPAA Safe Harbor for tables, PS3.15 Annex E for DICOM."""
