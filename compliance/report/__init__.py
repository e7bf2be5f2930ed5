"""Audit reports: `data` computes what a report says; one module per output format lays it
out (`html`, `pdf`, `csv_format`, `fhir`); `chart` draws privacy spent over time."""
