"""Every code a HealthFed node sends or prints, in one place, with what it means and what to do.

A code is what crosses the wire (a silo's `Refusal`, an aggregator's `Ack` or gRPC abort
`CODE: message`) and what a command prints (`refused [CODE]: ...`); the message beside it is
written by HealthFed for people and never carries exception text from a library. Codes are
stable: monitoring, audit events and the aggregator's handling (e.g. which refusals wait for
people) key on them, so a code is never renamed, only added.

`ErrorCode` is a `StrEnum`: `ErrorCode.AWAITING_APPROVAL == "AWAITING_APPROVAL"`, so code that
compares strings keeps working. Each member carries `meaning` and `action`, one line each,
written for the hospital IT person, data steward, coordinator or compliance officer who reads
it. The README's "Error codes" table is generated from them:

    python -m healthfed_common.error_codes --markdown        # print the table
    python -m healthfed_common.error_codes --write README.md # replace the README section
    python -m healthfed_common.error_codes --check README.md # exit 1 when it differs

`tests/core/test_error_codes.py` scans the source: every code used is a member, every member
is used, tested and documented.
"""

from __future__ import annotations

import argparse
import sys
from enum import StrEnum
from pathlib import Path


class ErrorCode(StrEnum):
    """A stable UPPER_SNAKE code; `meaning` and `action` say what happened and what to do."""

    meaning: str
    action: str

    def __new__(cls, value: str, meaning: str, action: str) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        member.action = action
        return member

    # -- roots of the error tree (raised only as a fallback; a leaf's code is more precise) ---
    HEALTHFED_ERROR = ("HEALTHFED_ERROR", "An error in HealthFed's shared code without a more specific code.",
                       "Read the message; report it with the log if it is not clear.")
    SILO_NODE_ERROR = ("SILO_NODE_ERROR", "An error in the silo node without a more specific code.",
                       "Read the message and the silo's log.")
    AGGREGATOR_ERROR = ("AGGREGATOR_ERROR", "An error in the aggregator without a more specific code.",
                        "Read the message and the aggregator's log.")
    COMPLIANCE_ERROR = ("COMPLIANCE_ERROR", "An error in the compliance tools without a more specific code.",
                        "Read the message; check the node folder given.")
    DATA_LAYER_ERROR = ("DATA_LAYER_ERROR", "A dataset registration or view failed without a more specific code.",
                        "Read the message; it names the file or column.")
    PRIVACY_LEDGER_ERROR = ("PRIVACY_LEDGER_ERROR", "The privacy ledger refused an operation without a more specific code.",
                            "Read the message; `silo-node ledger show` shows the budgets.")
    DP_ERROR = ("DP_ERROR", "A differential-privacy computation failed without a more specific code.",
                "Read the message; check the plan's `dp` section.")
    SECAGG_ERROR = ("SECAGG_ERROR", "The secure-aggregation protocol failed without a more specific code.",
                    "The round is re-offered; read the aggregator's log if it repeats.")
    ENROLMENT_ERROR = ("ENROLMENT_ERROR", "Enrolling this silo failed without a more specific code.",
                       "Read the message; re-run `silo-node enrol` after fixing it.")
    ATNA_ERROR = ("ATNA_ERROR", "Forwarding audit events to the hospital's ATNA/syslog repository failed.",
                  "Read the message; check the syslog settings and the repository.")

    # -- configuration, kits, paths -------------------------------------------------------
    CONFIG_INVALID = ("CONFIG_INVALID", "silo.yaml or aggregator.yaml is missing, unreadable or has a wrong key or value.",
                      "Fix the file named in the message (see the configuration reference).")
    NODE_CONFIG_INVALID = ("NODE_CONFIG_INVALID", "--config does not name a usable silo.yaml, or names another silo than the state folder's.",
                           "Pass the kit's silo.yaml that belongs to this state folder.")
    KIT_INVALID = ("KIT_INVALID", "A file of the startup kit (certificate, key, CA) is missing, unreadable or wrong.",
                   "Run `silo-node check --config silo.yaml` and fix what it names.")
    PATH_UNUSABLE = ("PATH_UNUSABLE", "A path given on the command line cannot be used (a file where a folder is needed, or unwritable).",
                     "Give a path of the right kind that this account can write.")
    STATE_DIR_LOCKED = ("STATE_DIR_LOCKED", "Another silo-node process already runs on this state folder.",
                        "Stop the other process; one silo process per state folder.")
    OPERATOR_REQUIRED = ("OPERATOR_REQUIRED", "A command that changes the node's state was run without naming the person.",
                         "Pass `--by NAME` or set HEALTHFED_OPERATOR.")
    AUDIT_WRITE_FAILED = ("AUDIT_WRITE_FAILED", "A dataset change could not be recorded in the audit log, so it was not made.",
                          "Run the command again; if it fails again, check the disk and `compliance verify --node STATE`.")
    NO_AUDIT_LOG = ("NO_AUDIT_LOG", "The state folder has no audit log yet, so the change could not be recorded.",
                    "Run the command once with `--config silo.yaml` to bind the folder to its kit.")
    PROVISION_INVALID = ("PROVISION_INVALID", "`aggregator provision` was given unusable options (silo ids, address, folder).",
                         "Fix the option named in the message.")
    FEDERATION_EXISTS = ("FEDERATION_EXISTS", "`aggregator provision` would overwrite an existing federation folder.",
                         "Choose another --out; never re-provision a running federation.")
    DATABASE_URL_INVALID = ("DATABASE_URL_INVALID", "aggregator.yaml's database_url is not a supported sqlite:// or postgresql:// URL.",
                            "Fix database_url (see the configuration reference).")
    STATE_STORE_UNAVAILABLE = ("STATE_STORE_UNAVAILABLE", "The aggregator cannot reach or open its state database.",
                               "Check that the database (PostgreSQL server or SQLite file) is up and reachable.")

    # -- container preflight (deploy/healthcheck.py; the exit status names the problem) ----
    KIT_MISSING = ("KIT_MISSING", "The container's preflight cannot find or read a kit file (silo.yaml, certificate, key).",
                   "Mount the kit at the path named and make it readable by the container's user.")
    STATE_UNWRITABLE = ("STATE_UNWRITABLE", "The container's state volume is not writable by its user.",
                        "Mount a writable state volume owned by the container's uid.")
    DATA_UNREADABLE = ("DATA_UNREADABLE", "The container's data folder is not a readable directory.",
                       "Mount the exports read-only at the data path and make them readable.")
    DATA_NOT_READ_ONLY = ("DATA_NOT_READ_ONLY", "The container's data folder is mounted writable.",
                          "Mount the exports with :ro (the node never needs to write them).")
    KEY_PERMISSIONS = ("KEY_PERMISSIONS", "A private key in the kit is readable by other users.",
                       "chmod 600 the key file named.")
    CA_KEY_MOUNTED = ("CA_KEY_MOUNTED", "The federation CA's private key is mounted into a silo container.",
                      "Remove ca.key from the silo's kit; only the coordinator keeps it.")

    # -- enrolment and identity -----------------------------------------------------------
    KEYS_EXIST = ("KEYS_EXIST", "`silo-node enrol` found keys already in the kit and never overwrites them.",
                  "Use the existing keys; re-enrolling with new keys needs the coordinator's confirmation.")
    CERTIFICATE_MISMATCH = ("CERTIFICATE_MISMATCH", "The certificate to install does not certify this kit's key, silo id or CA.",
                            "Ask the coordinator for the certificate issued for this kit's request.")
    CERTIFICATE_INVALID = ("CERTIFICATE_INVALID", "A certificate file cannot be read as a PEM X.509 certificate.",
                           "Check the file is the PEM certificate you were sent.")
    SIGNING_KEY_INVALID = ("SIGNING_KEY_INVALID", "The silo's Ed25519 signing key file is unreadable or malformed.",
                           "Restore signing.key from its backup (mode 0600), or re-enrol.")
    SIGNING_KEY_MISSING = ("SIGNING_KEY_MISSING", "This silo has no signing key, so it cannot take part in secure aggregation.",
                           "Run `silo-node enrol` and install the returned certificate.")
    ENROLMENT_REQUEST_INVALID = ("ENROLMENT_REQUEST_INVALID", "An enrolment request file is not valid JSON of the expected form.",
                                 "Ask the hospital to send the enrolment-request.json that `silo-node enrol` wrote.")
    ENROLMENT_REFUSED = ("ENROLMENT_REFUSED", "The coordinator refused an enrolment request.",
                         "Read the message; the hospital fixes its request and sends it again.")
    FEDERATION_MISMATCH = ("FEDERATION_MISMATCH", "The enrolment request is for another federation.",
                           "Check the hospital used the kit of this federation.")
    SILO_NOT_IN_FEDERATION = ("SILO_NOT_IN_FEDERATION", "The enrolment request names a silo that is not in aggregator.yaml's `silos`.",
                              "Add the silo with `aggregator provision`, or check the silo id.")
    CSR_INVALID = ("CSR_INVALID", "The enrolment request's certificate signing request cannot be read.",
                   "Ask the hospital to run `silo-node enrol` again and send the new request.")
    CSR_SIGNATURE_INVALID = ("CSR_SIGNATURE_INVALID", "The certificate signing request's signature does not verify.",
                             "The request was altered; ask for a fresh one over a trusted channel.")
    CSR_SUBJECT_MISMATCH = ("CSR_SUBJECT_MISMATCH", "The certificate signing request's CN is not the silo id.",
                            "Ask the hospital to enrol with the kit made for its silo id.")
    CSR_KEY_UNSUPPORTED = ("CSR_KEY_UNSUPPORTED", "The certificate signing request's key is not an EC P-256 key.",
                           "Ask the hospital to enrol with `silo-node enrol` (it makes a P-256 key).")
    SIGNING_KEY_PROOF_INVALID = ("SIGNING_KEY_PROOF_INVALID", "The request does not prove possession of its signing key.",
                                 "The request was altered; ask for a fresh one.")
    FINGERPRINT_MISMATCH = ("FINGERPRINT_MISMATCH", "A fingerprint differs from the expected one: the plan's computation built here, or an enrolment request's key.",
                            "Silo: check both sides run the same HealthFed version. Enrolment: compare fingerprints out of band.")
    SIGNING_KEY_CHANGED = ("SIGNING_KEY_CHANGED", "A silo re-enrolled with a different signing key than the one on record.",
                           "Confirm with the hospital by another channel, then pass --replace-signing-key.")
    SIGNING_KEY_IN_USE = ("SIGNING_KEY_IN_USE", "The signing key is already enrolled for another silo.",
                          "Each hospital must make its own keys; ask it to enrol again.")
    ENROLMENT_RECORD_INVALID = ("ENROLMENT_RECORD_INVALID", "A file in the aggregator's enrolled/ folder is damaged.",
                                "Restore it from backup or enrol the hospital again.")
    CA_KEY_UNAVAILABLE = ("CA_KEY_UNAVAILABLE", "The federation CA's private key is not available here.",
                          "Run enrolment where ca.key is kept (it may be kept offline).")
    COHORT_TOO_SMALL = ("COHORT_TOO_SMALL", "Fewer than 2 enrolled hospitals for a secure-aggregation plan without a cohort.",
                        "Enrol more hospitals before running the plan.")

    # -- connections to the aggregator ----------------------------------------------------
    NO_CLIENT_CERTIFICATE = ("NO_CLIENT_CERTIFICATE", "A connection to the aggregator came without a client certificate.",
                             "Check silo.yaml's tls.certificate and tls.private_key.")
    CERTIFICATE_REVOKED = ("CERTIFICATE_REVOKED", "The silo's certificate has been revoked by the coordinator.",
                           "Contact the coordinator; the silo must enrol again.")
    NOT_ENROLLED = ("NOT_ENROLLED", "The certificate names a silo that is not enrolled in this federation.",
                    "Check the silo id; the coordinator must enrol it.")
    IDENTITY_MISMATCH = ("IDENTITY_MISMATCH", "A message claims another silo's id than its certificate's.",
                         "A silo can act only as itself; check for a misconfigured or malicious silo.")
    SECAGG_SENDER_MISMATCH = ("SECAGG_SENDER_MISMATCH", "A secure-aggregation message names another silo as its sender than the certificate's.",
                              "Check for a misconfigured or malicious silo.")
    MESSAGE_TOO_LARGE = ("MESSAGE_TOO_LARGE", "A message exceeds the receiver's size limit.",
                         "If honest answers are refused, raise max_message_bytes in aggregator.yaml.")
    SUBMIT_LIMIT_ABOVE_CAP = ("SUBMIT_LIMIT_ABOVE_CAP", "The plan's largest answer may exceed aggregator.yaml's max_message_bytes.",
                              "Raise max_message_bytes, or silos' results will be refused.")
    WIRE_FORMAT = ("WIRE_FORMAT", "Bytes received are not a valid HealthFed message.",
                   "Check both sides run the same HealthFed version; repeated, it may be an attack.")
    PROTOCOL_VERSION = ("PROTOCOL_VERSION", "The peer speaks another version of the wire protocol.",
                        "Upgrade the older side so both run the same HealthFed version.")
    WRONG_MESSAGE_TYPE = ("WRONG_MESSAGE_TYPE", "A valid message of a kind the called method does not take.",
                          "Check both sides run the same HealthFed version.")
    AGGREGATOR_REFUSED_MESSAGE = ("AGGREGATOR_REFUSED_MESSAGE", "The aggregator refused a request without a code (e.g. gRPC's own size limit).",
                                  "Read the silo's log line for the aggregator's text.")
    STALE_TASK = ("STALE_TASK", "An answer arrived for a task that is no longer open (late or replayed).",
                  "Nothing: the silo takes the next task.")
    NOT_SELECTED = ("NOT_SELECTED", "An answer came from a silo that was not offered this task.",
                    "Nothing if rare; repeated, check the silo.")
    DUPLICATE = ("DUPLICATE", "A second answer from the same silo for the same task.",
                 "Nothing: the first answer counts.")
    INVALID_RESULT = ("INVALID_RESULT", "A silo's result has the wrong number, type or shape of arrays for the plan.",
                      "Check the silo runs the same HealthFed version and plan.")
    NO_WITNESS = ("NO_WITNESS", "This aggregator does not witness audit checkpoints.",
                  "Nothing; the silo's log is still verifiable locally.")
    CHECKPOINT_REJECTED = ("CHECKPOINT_REJECTED", "A signed audit checkpoint was refused (bad signature, rollback or inconsistent history).",
                           "Run `compliance verify` on the node whose checkpoint was refused now: the silo's folder when "
                           "the aggregator refused it, the aggregator's with the hospitals' witness databases when a silo did.")

    # -- plans: schema and checks ---------------------------------------------------------
    PLAN_INVALID = ("PLAN_INVALID", "The plan does not satisfy the plan schema.",
                    "Run `aggregator plan validate` to see each problem.")
    PLAN_UNREADABLE = ("PLAN_UNREADABLE", "The plan file is missing, a folder or unreadable.",
                       "Pass the plan's JSON file.")
    PLAN_NOT_JSON = ("PLAN_NOT_JSON", "The plan file is not valid JSON.",
                     "Fix the JSON at the line named.")
    PLAN_NOT_AN_OBJECT = ("PLAN_NOT_AN_OBJECT", "The plan is JSON but not an object of keys and values.",
                          "Start from `aggregator plan init`.")
    PLAN_UNKNOWN_FIELD = ("PLAN_UNKNOWN_FIELD", "The plan has a key the schema does not know (the closest known key is named).",
                          "Fix the spelling or remove the key.")
    PLAN_MISSING_FIELD = ("PLAN_MISSING_FIELD", "A required plan key is missing.",
                          "Add the key named (see the plan reference).")
    PLAN_BAD_VALUE = ("PLAN_BAD_VALUE", "A plan value has the wrong type or is out of range.",
                      "Fix the value named (see the plan reference).")
    PLAN_RULE = ("PLAN_RULE", "The plan breaks a rule across keys (e.g. threshold above the cohort size).",
                 "Read the message and change the plan.")
    PLAN_WITHOUT_DP = ("PLAN_WITHOUT_DP", "Warning: the plan has no differential privacy; hospitals may refuse it.",
                       "Add a `dp` section unless every hospital accepts non-private plans.")
    PLAN_WITHOUT_SECURE_AGGREGATION = ("PLAN_WITHOUT_SECURE_AGGREGATION", "Warning: the plan sums updates in plain; the aggregator sees each one.",
                                       "Set secure_aggregation.protocol unless hospitals accept that.")
    PLAN_COHORT_UNKNOWN_SILO = ("PLAN_COHORT_UNKNOWN_SILO", "The plan's cohort names a silo that is not enrolled.",
                                "Remove it from the cohort or enrol it first.")
    PLAN_COHORT_FROM_ENROLMENT = ("PLAN_COHORT_FROM_ENROLMENT", "Note: the plan has no cohort; `aggregator run` fills it from the enrolled hospitals.",
                                  "Nothing, or pin the cohort in the plan yourself.")
    PLAN_OPTION_INVALID = ("PLAN_OPTION_INVALID", "An option of `aggregator plan init` is invalid.",
                           "Fix the option named.")
    PLAN_EXISTS = ("PLAN_EXISTS", "`aggregator plan init` would overwrite an existing file.",
                   "Choose another --out or pass --force.")
    PLAN_HASH_MISMATCH = ("PLAN_HASH_MISMATCH", "The plan received does not hash to the hash the aggregator announced.",
                          "Check both sides run the same HealthFed version; repeated, suspect tampering.")
    PLAN_UNBUILDABLE = ("PLAN_UNBUILDABLE", "The silo could not build the plan's model and computation.",
                        "Read the silo's log; check versions and the plan's model settings.")
    PLAN_CACHE_INVALID = ("PLAN_CACHE_INVALID", "A cached traced plan does not match its key, checksum or fingerprint; it is traced again.",
                          "Nothing; delete the plan-cache folder if it repeats.")
    PLAN_CACHE_UNREADABLE = ("PLAN_CACHE_UNREADABLE", "A cached traced plan could not be read; it is traced again.",
                             "Check the plan-cache folder's permissions and disk.")
    UNKNOWN_MODEL = ("UNKNOWN_MODEL", "The plan names a model id that is not in this build's model registry.",
                     "Use a registered model id (logistic_regression, mlp, small_cnn).")
    MODEL_INPUT_INVALID = ("MODEL_INPUT_INVALID", "The model state sent with a task does not fit the plan's computation (count, dtype, shape) or holds NaN/infinity.",
                           "Repeated, suspect a faulty or malicious aggregator.")
    WEIGHTS_MISMATCH = ("WEIGHTS_MISMATCH", "The model weights sent for evaluation do not fit the plan's model.",
                        "Check the aggregator runs the same plan and version.")

    # -- approval and local policy ---------------------------------------------------------
    AWAITING_APPROVAL = ("AWAITING_APPROVAL", "The hospital's data steward has not yet approved the plan.",
                         "Steward: review and run `silo-node plans approve HASH`; the aggregator waits.")
    APPROVAL_EXPIRED = ("APPROVAL_EXPIRED", "The plan's approval has expired.",
                        "Steward: approve it again if it may still run.")
    APPROVED = ("APPROVED", "Not an error: a data steward approved the plan.",
                "Nothing.")
    AUTO_APPROVED = ("AUTO_APPROVED", "Not an error: the node's approval policy approved the plan.",
                     "Nothing.")
    REJECTED_BY_STEWARD = ("REJECTED_BY_STEWARD", "The hospital's data steward rejected the plan (the reason stays at the hospital).",
                           "Coordinator: ask the hospital; change the plan if needed.")
    PLAN_NOT_FOUND = ("PLAN_NOT_FOUND", "No received plan has that hash (prefix).",
                      "Run `silo-node plans list` and use a listed hash.")
    PLAN_NOT_APPROVABLE = ("PLAN_NOT_APPROVABLE", "The plan breaks the node's approval policy, so no person can approve it.",
                           "Change the plan, or the node's policy file if the hospital agrees.")
    MODEL_NOT_ALLOWED = ("MODEL_NOT_ALLOWED", "The node's policy does not allow the plan's model.",
                         "Use an allowed model, or add it to the policy's allowed_models.")
    DP_REQUIRED = ("DP_REQUIRED", "The node's policy requires differential privacy and the plan has none.",
                   "Add a `dp` section to the plan.")
    EPSILON_ABOVE_POLICY = ("EPSILON_ABOVE_POLICY", "The plan's ε is above the node's maximum.",
                            "Lower dp.target_epsilon.")
    DELTA_ABOVE_POLICY = ("DELTA_ABOVE_POLICY", "The plan's δ is above the node's maximum.",
                          "Lower dp.target_delta.")
    SECURE_AGGREGATION_REQUIRED = ("SECURE_AGGREGATION_REQUIRED", "The node requires secure aggregation and the plan or round has none.",
                                   "Set secure_aggregation.protocol in the plan.")
    COHORT_MISSING = ("COHORT_MISSING", "A secure-aggregation plan does not name its cohort.",
                      "Let `aggregator run` fill it, or list the hospitals and their keys.")
    SECAGG_THRESHOLD_TOO_LOW = ("SECAGG_THRESHOLD_TOO_LOW", "The plan's secure-aggregation threshold is below the node's minimum.",
                                "Raise secure_aggregation.threshold.")
    NOT_IN_COHORT = ("NOT_IN_COHORT", "The plan's cohort does not include this silo.",
                     "Add the silo to the cohort if it should take part.")
    COHORT_KEY_MISMATCH = ("COHORT_KEY_MISMATCH", "The plan pins another signing key for this silo than its own.",
                           "Compare fingerprints with the coordinator out of band; fix the cohort.")
    FEATURE_NOT_ALLOWED = ("FEATURE_NOT_ALLOWED", "The plan asks for a feature, transform or label outside the dataset's allow-list.",
                           "Change the plan, or the dataset policy if the steward agrees.")
    NON_PRIVATE_PREPROCESSING = ("NON_PRIVATE_PREPROCESSING", "A DP plan would standardise with statistics of the private records.",
                                 "Declare public `bounds` in the dataset policy, or use another transform.")

    # -- privacy ledger -------------------------------------------------------------------
    PRIVACY_BUDGET_NOT_SET = ("PRIVACY_BUDGET_NOT_SET", "The dataset has no privacy budget yet.",
                              "Steward: `silo-node ledger set-budget DATASET --epsilon E --delta D`.")
    PRIVACY_BUDGET_EXCEEDED = ("PRIVACY_BUDGET_EXCEEDED", "The round would exceed the dataset's privacy budget.",
                               "Nothing more can be spent on this dataset unless the steward raises its budget.")
    PRIVACY_CHARGE_INVALID = ("PRIVACY_CHARGE_INVALID", "A privacy charge has invalid parameters.",
                              "Check the plan's dp section and HealthFed version.")
    PRIVACY_CHARGE_CONFLICT = ("PRIVACY_CHARGE_CONFLICT", "A round was charged before with different parameters.",
                               "Run a new plan; a round is never charged twice.")
    BUDGET_DELTA_LOCKED = ("BUDGET_DELTA_LOCKED", "δ cannot change once anything was charged.",
                           "Keep δ; change only ε.")
    BUDGET_BELOW_SPENT = ("BUDGET_BELOW_SPENT", "The new ε would be below what is already spent.",
                          "Set ε at least to the spent amount (`silo-node ledger show`).")
    NON_PRIVATE_PLAN_ON_BUDGETED_DATASET = ("NON_PRIVATE_PLAN_ON_BUDGETED_DATASET", "A plan without DP on a dataset with a privacy budget.",
                                            "Add `dp` to the plan, or set the policy to charge_infinity.")
    TOO_MANY_EXAMPLES = ("TOO_MANY_EXAMPLES", "The training view has more records than the plan's max_examples_per_silo.",
                         "Raise max_examples_per_silo in the plan if the steward agrees.")
    EVALUATION_LIMIT_REACHED = ("EVALUATION_LIMIT_REACHED", "The plan already evaluated as many models here as the policy allows.",
                                "Raise max_evaluations_per_plan in the policy if the steward agrees.")
    EVALUATION_NOT_PARTICIPANT = ("EVALUATION_NOT_PARTICIPANT", "The silo evaluates only plans it trained in.",
                                  "Nothing; evaluate with the hospitals that trained.")
    NO_EVALUATION_DATA = ("NO_EVALUATION_DATA", "The dataset has no held-out records for evaluation.",
                          "Register the dataset with a test split.")
    ROUND_ALREADY_RELEASED = ("ROUND_ALREADY_RELEASED", "The round was already released from another model state; training again would spend privacy twice.",
                              "Nothing; the plan goes on without this silo's round.")
    ROUND_OUT_OF_RANGE = ("ROUND_OUT_OF_RANGE", "The round number is outside the plan's rounds.",
                          "Repeated, suspect a faulty or malicious aggregator.")
    ATTEMPT_OUT_OF_RANGE = ("ATTEMPT_OUT_OF_RANGE", "The attempt number is outside the plan's max_round_attempts.",
                            "Repeated, suspect a faulty or malicious aggregator.")
    DP_EVENT_INVALID = ("DP_EVENT_INVALID", "A stored or received DP event is malformed or of an unknown mechanism.",
                        "Check the ledger database was not edited; check versions.")
    DP_CALIBRATION_FAILED = ("DP_CALIBRATION_FAILED", "No noise level reaches the plan's (ε, δ) for this dataset size.",
                             "Raise ε, lower the rounds or the batch size.")

    # -- secure aggregation ----------------------------------------------------------------
    SECAGG_INVALID_PARAMETERS = ("SECAGG_INVALID_PARAMETERS", "Secure-aggregation parameters no honest party should accept.",
                                 "Check the plan's threshold and cohort.")
    SECAGG_INVALID_INPUT = ("SECAGG_INVALID_INPUT", "The silo's own vectors do not match the session.",
                            "Report it with the silo's log (a bug).")
    SECAGG_PHASE_ORDER = ("SECAGG_PHASE_ORDER", "A protocol step came out of order or twice.",
                          "Repeated, suspect a faulty or malicious aggregator.")
    SECAGG_TOO_FEW_SURVIVORS = ("SECAGG_TOO_FEW_SURVIVORS", "Fewer silos than the threshold are left; the round aborts and nothing is revealed.",
                                "Check why silos dropped; the plan stops if updates were masked.")
    SECAGG_PROTOCOL_VIOLATION = ("SECAGG_PROTOCOL_VIOLATION", "A secure-aggregation message is malformed, replayed or from another session.",
                                 "Repeated, suspect a faulty or malicious party.")
    SECAGG_AUTHENTICATION_FAILED = ("SECAGG_AUTHENTICATION_FAILED", "A key advertisement's signature or an encrypted share did not verify.",
                                    "Suspect a substituted key; compare cohort fingerprints.")
    SECAGG_SHARE_REQUEST_REFUSED = ("SECAGG_SHARE_REQUEST_REFUSED", "The silo refused an unmasking request that would reveal one hospital's input.",
                                    "Suspect a malicious aggregator; report it.")
    SECAGG_EQUIVOCATION = ("SECAGG_EQUIVOCATION", "The aggregator sent a second, different request for one phase.",
                           "Suspect a malicious aggregator; report it.")
    SECAGG_CONSISTENCY_FAILED = ("SECAGG_CONSISTENCY_FAILED", "An unmasking request lacks t valid consistency signatures.",
                                 "Suspect a malicious aggregator; report it.")
    SECAGG_COMMITMENT_MISMATCH = ("SECAGG_COMMITMENT_MISMATCH", "A reconstructed seed does not open its silo's commitment.",
                                  "Suspect a malicious silo; the round aborts.")
    SECAGG_SESSION_MISMATCH = ("SECAGG_SESSION_MISMATCH", "The offered session differs from the one the silo derives from plan, cohort, round and model.",
                               "Suspect a faulty or malicious aggregator.")
    SECAGG_UPDATE_ALREADY_MASKED = ("SECAGG_UPDATE_ALREADY_MASKED", "The silo's update for this round was masked in another session; never again.",
                                    "Start the plan anew.")
    SECAGG_UNKNOWN_PHASE = ("SECAGG_UNKNOWN_PHASE", "The aggregator named an unknown secure-aggregation phase.",
                            "Check both sides run the same HealthFed version.")
    SECAGG_PHASE_PAYLOAD_INVALID = ("SECAGG_PHASE_PAYLOAD_INVALID", "A phase request carries the wrong kind of payload.",
                                    "Check both sides run the same HealthFed version.")
    SECAGG_UNKNOWN_SESSION = ("SECAGG_UNKNOWN_SESSION", "The silo holds no state for that session (e.g. it restarted).",
                              "Nothing; the silo counts as dropped for the round.")
    SILO_INTERNAL_ERROR = ("SILO_INTERNAL_ERROR", "The silo failed while running the task; details stay in its log.",
                           "Hospital IT: read the silo's log. Repeated, it is reported failing.")

    # -- datasets: registration, reading, de-identification ------------------------------
    DATASET_NOT_FOUND = ("DATASET_NOT_FOUND", "No dataset of that name is registered in this silo.",
                         "Register it with `silo-node data add`, or check the plan's dataset name.")
    DATASET_EXISTS = ("DATASET_EXISTS", "A dataset of that name is already registered.",
                      "Remove it first (`silo-node data remove`) or choose another name.")
    POLICY_INVALID = ("POLICY_INVALID", "The dataset policy does not satisfy the schema or contradicts itself.",
                      "Fix the policy file (see the dataset policy reference).")
    POLICY_UNREADABLE = ("POLICY_UNREADABLE", "A dataset policy file cannot be read.",
                         "Check the path and permissions.")
    POLICY_EXISTS = ("POLICY_EXISTS", "`data policy-template` would overwrite an existing file.",
                     "Choose another --out.")
    IDENTIFIER_NOT_HANDLED = ("IDENTIFIER_NOT_HANDLED", "The export has HIPAA identifier columns the policy neither drops nor generalises.",
                              "Add each named column to the policy's `identifiers`.")
    MALFORMED_INPUT = ("MALFORMED_INPUT", "An input file cannot be read as the data it claims to be.",
                       "Fix the file at the row or column named.")
    MALFORMED_NOT_A_FILE = ("MALFORMED_NOT_A_FILE", "Expected a CSV or Parquet file.",
                            "Pass the export file, not a folder.")
    MALFORMED_NOT_A_FOLDER = ("MALFORMED_NOT_A_FOLDER", "Expected a folder of DICOM files.",
                              "Pass the DICOM folder.")
    MALFORMED_HEADER = ("MALFORMED_HEADER", "A header is unusable (a column without a name, a DICOM header that cannot be read).",
                        "Fix the header named.")
    MALFORMED_DUPLICATE_COLUMN = ("MALFORMED_DUPLICATE_COLUMN", "A column name appears more than once.",
                                  "Rename one of the columns.")
    MALFORMED_ENCODING = ("MALFORMED_ENCODING", "The file is not in the detected or declared text encoding (or has NUL bytes).",
                          "Set `encoding` in the dataset policy, or re-export as UTF-8.")
    MALFORMED_CSV = ("MALFORMED_CSV", "The file is not valid CSV with the delimiter used.",
                     "Set `delimiter` in the policy, or fix the file at the row named.")
    MALFORMED_RAGGED = ("MALFORMED_RAGGED", "Rows have the wrong number of fields (each is named).",
                        "Fix or remove the rows named.")
    MALFORMED_EMPTY = ("MALFORMED_EMPTY", "The file is empty or has no records.",
                       "Export the records again.")
    MALFORMED_SPREADSHEET = ("MALFORMED_SPREADSHEET", "A spreadsheet that cannot be read: a legacy .xls, an .ods, or a damaged .xlsx.",
                             "Save the sheet as .xlsx or as CSV.")
    SHEET_NOT_DECLARED = ("SHEET_NOT_DECLARED", "An .xlsx export has several sheets and the dataset policy names none (they are listed).",
                          "Set `sheet` in the policy (or `--sheet` for policy-template).")
    SHEET_NOT_FOUND = ("SHEET_NOT_FOUND", "The sheet the dataset policy names is not in the .xlsx export (its sheets are listed).",
                       "Correct `sheet` in the policy.")
    MALFORMED_PARQUET = ("MALFORMED_PARQUET", "The file is not a readable Parquet file.",
                         "Export it again, or as CSV.")
    MALFORMED_TYPE = ("MALFORMED_TYPE", "A value is not of its column's kind (not a number, date, age or ZIP code).",
                      "Fix the value at the row and column named.")
    MALFORMED_DICOM = ("MALFORMED_DICOM", "A DICOM file cannot be parsed.",
                       "Export the instance again; or set on_reject: skip.")
    MALFORMED_TRUNCATED = ("MALFORMED_TRUNCATED", "A DICOM file is truncated.",
                           "Copy the instance again.")
    INSTANCE_REJECTED = ("INSTANCE_REJECTED", "A DICOM instance cannot be used for training.",
                         "See the reason in the ingestion report; or set on_reject: skip.")
    NOT_DICOM = ("NOT_DICOM", "A file in the DICOM folder is not a DICOM file.",
                 "Remove it, or set on_reject: skip.")
    DICOMDIR = ("DICOMDIR", "A DICOMDIR index, not an image instance.",
                "Nothing with on_reject: skip; else remove it.")
    NO_LABEL = ("NO_LABEL", "A DICOM instance has no label in the labels table.",
                "Add it to the labels CSV, or set on_reject: skip.")
    NO_PIXEL_DATA = ("NO_PIXEL_DATA", "A DICOM instance has no pixel data.",
                     "Remove it, or set on_reject: skip.")
    MULTI_FRAME = ("MULTI_FRAME", "A multi-frame DICOM instance; only single-frame images are used.",
                   "Remove it, or set on_reject: skip.")
    PHOTOMETRIC_UNSUPPORTED = ("PHOTOMETRIC_UNSUPPORTED", "The DICOM photometric interpretation is not supported.",
                               "Convert it to MONOCHROME2 or RGB, or set on_reject: skip.")
    PIXEL_DATA_UNDECODABLE = ("PIXEL_DATA_UNDECODABLE", "The DICOM pixel data cannot be decoded into a 2-D image.",
                              "Decompress the instance, or set on_reject: skip.")
    NO_USABLE_INSTANCES = ("NO_USABLE_INSTANCES", "No usable image instance in the DICOM folder.",
                           "Check the folder and the labels table.")
    UNWRITABLE = ("UNWRITABLE", "A DICOM instance cannot be stored after de-identification: it lacks an attribute every stored instance needs (its SOP Class UID) or a value cannot be encoded.",
                  "Re-export the file named from the PACS, or set on_reject: skip to leave it out.")

    # -- scoring with an exported model (`aggregator predict`) ------------------------------
    PREDICT_CARD_INVALID = ("PREDICT_CARD_INVALID", "The model folder has no readable model card, or the model is not tabular.",
                            "Give the folder `aggregator run` exported (OUT/model, holding model-card.json).")
    PREDICT_COLUMN_MISSING = ("PREDICT_COLUMN_MISSING", "The CSV lacks a column one of the model's features needs (it is named).",
                              "Add the column, named as in the model card's features.")
    PREDICT_NEEDS_TRAIN_STATS = ("PREDICT_NEEDS_TRAIN_STATS", "A model trained without DP needs this hospital's own training statistics to preprocess.",
                                 "Give --stats-from-train with the CSV of the records this hospital trained on.")
    PREDICT_NEEDS_BOUNDS = ("PREDICT_NEEDS_BOUNDS", "A DP model standardises a feature with public bounds that were not given.",
                            "Give --policy with this hospital's dataset policy declaring `bounds` for the feature.")

    # -- compliance -----------------------------------------------------------------------
    UNKNOWN_EVENT_KIND = ("UNKNOWN_EVENT_KIND", "An audit event kind outside the closed vocabulary.",
                          "Report it (a bug); the event was not recorded.")
    INVALID_EVENT = ("INVALID_EVENT", "An audit event's fields do not satisfy the conventions.",
                     "Report it (a bug); the event was not recorded.")
    INVALID_PROOF = ("INVALID_PROOF", "A Merkle inclusion or consistency proof does not verify.",
                     "Run `compliance verify`; suspect tampering.")
    KEY_FILE = ("KEY_FILE", "An audit signing or public key file is unreadable, malformed or too widely readable.",
                "Restore the key file with mode 0600.")
    LOG_NOT_FOUND = ("LOG_NOT_FOUND", "The node folder has no audit log.",
                     "Check the --node path.")
    LOG_CORRUPT = ("LOG_CORRUPT", "The audit log file is damaged or truncated.",
                   "Treat as tampering: keep the file, restore from backup, report it.")
    LOG_INTEGRITY = ("LOG_INTEGRITY", "The audit log shows tampering: entries changed, removed or reordered.",
                     "Keep the file as evidence and report it; the first bad entry is named.")
    SIGNING_KEY_MISMATCH = ("SIGNING_KEY_MISMATCH", "The audit signing key on disk did not sign this log's checkpoints.",
                            "Suspect a replaced key; report it.")
    EXPORT_NOT_RECORDABLE = ("EXPORT_NOT_RECORDABLE", "The node folder has no audit signing key, so a report exported from it could not be recorded in its log.",
                             "Export on the node itself (a copy of its folder cannot record who exported); `compliance verify` checks a copy read-only.")
    COMPLIANCE_INTERNAL_ERROR = ("COMPLIANCE_INTERNAL_ERROR", "The compliance tool failed unexpectedly: a defect, not a verdict on the log.",
                                 "Keep the printed traceback and report it; run the command again after an upgrade.")
    MALFORMED_CHECKPOINT = ("MALFORMED_CHECKPOINT", "A checkpoint lacks a field or has one of the wrong form.",
                            "Run `compliance verify`; suspect tampering.")
    SIGNATURE_INVALID = ("SIGNATURE_INVALID", "A checkpoint's signature does not verify.",
                         "Run `compliance verify`; suspect tampering.")
    ORIGIN_MISMATCH = ("ORIGIN_MISMATCH", "An audit log or checkpoint belongs to another node.",
                       "Check the --node path.")
    WITNESS_IS_OWN_STORE = ("WITNESS_IS_OWN_STORE", "The witness database given is the verified node's own store.",
                            "Pass the other side's store: the aggregator's for a silo's log, a hospital's for the aggregator's.")
    PROCESSING_RECORD_MISSING = ("PROCESSING_RECORD_MISSING", "The node has no GDPR Art. 30 record of processing.",
                                 "Write processing-record.yaml in the node folder.")
    PROCESSING_RECORD_INVALID = ("PROCESSING_RECORD_INVALID", "The node's record of processing does not satisfy its schema.",
                                 "Fix processing-record.yaml as the message says.")
    REPORT_ERROR = ("REPORT_ERROR", "A report cannot be produced from the period, format or output path given.",
                    "Fix the option named.")
    OUTBOX_DESTINATION_CHANGED = ("OUTBOX_DESTINATION_CHANGED", "The ATNA outbox was made for another syslog destination.",
                                  "Forward the pending events to the old destination first, or start a new outbox.")
    SYSLOG_CONFIG_INVALID = ("SYSLOG_CONFIG_INVALID", "The ATNA/syslog forwarding settings are invalid.",
                             "Fix the setting named.")


_TABLE_HEADER = "| code | what it means | what to do |\n|---|---|---|\n"
BEGIN = "<!-- error-codes:begin (generated by `python -m healthfed_common.error_codes --write README.md`; do not edit by hand) -->"
END = "<!-- error-codes:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's error-code table: one row per code, sorted, from the members' own text."""
    members: list[ErrorCode] = sorted(ErrorCode.__members__.values(), key=lambda c: c.name)
    rows = [f"| `{code.name}` | {_cell(code.meaning)} | {_cell(code.action)} |\n" for code in members]
    return _TABLE_HEADER + "".join(rows)


def readme_section() -> str:
    """The generated part of the README's "## Error codes" section, markers included."""
    return f"{BEGIN}\n{markdown_table()}{END}"


def replace_section(readme: str) -> str:
    """`readme` with the text between the markers replaced by the generated table."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {BEGIN!r} ... {END!r} section")
    return readme[:start] + readme_section() + readme[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthfed_common.error_codes",
                                     description="Print or write the README's error-code table.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the table")
    group.add_argument("--write", type=Path, metavar="README", help="replace the table in README")
    group.add_argument("--check", type=Path, metavar="README", help="exit 1 if README's table differs")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    path: Path = args.write or args.check
    text = path.read_text(encoding="utf-8")
    updated = replace_section(text)
    if args.check:
        if updated != text:
            print(f"{path}: the error-code table differs from the code; run with --write", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
