"""Helpers the tests and benchmarks share: real peers (dcmtk, Orthanc, PostgreSQL, Chromium, an HL7/FHIR
end), node processes, and synthetic studies."""
