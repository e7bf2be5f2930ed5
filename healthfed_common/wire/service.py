"""gRPC names of the federation service (v1). Payloads are `codec` envelopes."""

SERVICE_NAME = "healthfed.v1.Federation"
POLL_METHOD = "Poll"
SUBMIT_METHOD = "Submit"
