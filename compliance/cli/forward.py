"""`compliance forward`: stream a node's audit events to a hospital's ATNA audit repository
(RFC 5424 over TLS syslog, RFC 5425) through the durable outbox of `compliance.atna`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from compliance.atna import Forwarder, SyslogTarget, parse_address
from compliance.cli.common import EXIT_OK

EXIT_QUEUED = 4

DESCRIPTION = """\
Send every audit event of a node to the hospital's audit record repository (IHE ATNA) as
RFC 5424 syslog messages over TLS (RFC 5425, octet-counted frames). Each message carries the
event as a FHIR AuditEvent following the IHE Basic Audit Log Patterns (BALP), and the
structured data [healthfed@32473 origin=".." index=".." leaf=".."] -- a stable event id the
repository can deduplicate on, and the entry's Merkle leaf hash.

Every event is first queued in DIR/audit/atna-outbox.sqlite3; the sender delivers the queue in
order and marks an event delivered only after its TLS write succeeded. While the repository is
down, events stay queued (the node keeps running) and are sent once it is back. Runs until
stopped (SIGINT/SIGTERM), watching the log for new events; --once delivers what is there and
exits. On stopping it ends the TLS stream and waits (up to 5 s) for the repository to close its
side, which gives a busy repository time to read the last events; if it does not close in that
time, the events sent in the last second stay queued and are sent again next time (the
repository can drop a repeat by its origin and index). This is not an acknowledgement (syslog
over TLS has none): give the repository a queue that survives its own restart.
The outbox belongs to one repository: forwarding the same node to another address is
refused (OUTBOX_DESTINATION_CHANGED).

Repository settings: rsyslog's default maxMessageSize (8k) can cut long events; set it to 64k.
"""

EXAMPLES = """\
examples:
  compliance forward --node /var/lib/healthfed/silo --to audit.st-marys.example:6514 \\
      --ca hospital-ca.pem --cert silo-syslog.pem --key silo-syslog.key
  compliance forward --node /var/lib/healthfed/silo --to audit.st-marys.example:6514 \\
      --ca hospital-ca.pem --once

exit codes:
  0  stopped (or, with --once, every event delivered)
  2  the command line was wrong (see --help)
  3  an input is missing or invalid (node directory, CA file, certificate or key, address,
     an outbox filled for another repository)
  4  with --once: events remain queued (the repository could not be reached, or did not
     close the connection after the last events)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "forward", help="stream audit events to an ATNA audit repository (TLS syslog)",
        description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--node", type=Path, required=True, metavar="DIR",
                        help="node state directory (holds audit/audit.sqlite3)")
    parser.add_argument("--to", required=True, metavar="HOST:PORT",
                        help="the repository's TLS syslog endpoint (usually port 6514)")
    parser.add_argument("--ca", type=Path, required=True, metavar="FILE",
                        help="CA certificate(s) that sign the repository's certificate (PEM)")
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="this node's client certificate, when the repository authenticates nodes")
    parser.add_argument("--key", type=Path, metavar="FILE", help="the client certificate's key")
    parser.add_argument("--server-name", metavar="NAME",
                        help="name to verify in the repository's certificate (default: HOST)")
    parser.add_argument("--purpose", default="",
                        help="purpose of use stated on disclosures whose plan logged none")
    parser.add_argument("--once", action="store_true",
                        help="deliver what is queued and exit (exit code 4 if some remain)")
    parser.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                        help="how often to look for new events (default 0.5)")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    host, port = parse_address(args.to)
    target = SyslogTarget(host, port, args.ca, args.cert, args.key, args.server_name)
    forwarder = Forwarder(args.node, target, default_purpose=args.purpose,
                          status=lambda line: print(line, flush=True))
    if args.once:
        try:
            forwarder.step()
            forwarder.disconnect()  # gives the repository time to read what was sent (no acknowledgement)
            queued, delivered = forwarder.outbox.counts()
        finally:
            forwarder.close()
        print(f"{delivered} of {queued} events delivered to {target.destination}")
        return EXIT_OK if delivered == queued else EXIT_QUEUED
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    print(f"forwarding {args.node} to {target.destination}; stop with Ctrl-C", flush=True)
    sender = threading.Thread(target=forwarder.run, args=(stop, args.poll), name="atna-sender",
                              daemon=True)
    sender.start()
    while sender.is_alive():
        sender.join(0.5)
    print("forwarder stopped; undelivered events stay queued", file=sys.stderr)
    return EXIT_OK
