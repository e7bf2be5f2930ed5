"""Tamper-evident audit records for HealthFed nodes, their verification, and the reports a
compliance officer hands to a regulator.

Every node (each silo and the aggregator) appends security-relevant events to its own
`AuditLog`: an RFC 9162 Merkle tree over canonical-JSON entries shaped like FHIR R4
AuditEvents, with an Ed25519-signed checkpoint after every append. The aggregator keeps the
silos' checkpoints in a `WitnessStore`, so neither side can rewrite history unnoticed.
`compliance verify` proves a log intact; `compliance export` writes the audit report.

Importing this package has no side effects and never imports TensorFlow.
"""

from compliance.errors import ComplianceError

__all__ = ["ComplianceError"]
