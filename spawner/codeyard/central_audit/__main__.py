"""`python -m codeyard.central_audit {serve,verify,verify-local,checkpoint,prune,upgrade-db}`.

- `serve [--CentralAudit.<name>=...]`: the service (the Hub runs it; `service.CentralAudit`);
- `verify --export FILE --public-key FILE`: check a JSONL export with the public key only;
- `verify-local --log audit.jsonl --user U --workspace W`: compare a workspace's local log
  with what the database holds (on the Hub's machine, reading the database directly);
- `checkpoint`, `prune --days N`, `upgrade-db`: maintenance on the database.

Exit status: 0 when everything verifies, 1 when something does not, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .chain import load_public_key, load_secret, load_signing_key, verify_export
from .database import AUDIT_DB, open_db
from .store import AuditStore, parse_jsonl


def _store(args: argparse.Namespace) -> AuditStore:
    return AuditStore(
        open_db(args.db_url),
        load_secret(args.hmac_key_file),
        load_signing_key(args.signing_key_file),
    )


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        from .service import CentralAudit

        app = CentralAudit()
        app.initialize(argv[1:])
        asyncio.run(app.run())
        return 0
    parser = argparse.ArgumentParser(prog="python -m codeyard.central_audit")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check a JSONL export against the public key")
    verify.add_argument("--export", required=True, type=Path)
    verify.add_argument("--public-key", required=True, type=Path)
    db_commands = {
        "verify-local": "compare a workspace's local audit log with the stored chain",
        "checkpoint": "sign the head of every chain that moved",
        "prune": "drop records older than --days",
        "upgrade-db": "back up (SQLite) and upgrade the tables to the newest revision",
    }
    subs = {}
    for name, text in db_commands.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--db-url", required=True)
        p.add_argument("--hmac-key-file", default="codeyard_audit_hmac.key")
        p.add_argument("--signing-key-file", default="codeyard_audit_ed25519.pem")
        subs[name] = p
    subs["verify-local"].add_argument("--log", required=True, type=Path)
    subs["verify-local"].add_argument("--user", required=True)
    subs["verify-local"].add_argument("--workspace", required=True)
    subs["prune"].add_argument("--days", required=True, type=float)
    args = parser.parse_args(argv)

    if args.command == "verify":
        lines = parse_jsonl(args.export.read_text("utf-8"))
        check = verify_export(lines, load_public_key(args.public_key.read_bytes()))
        print(json.dumps(check.as_dict(), indent=2))
        return 0 if check.ok else 1
    if args.command == "upgrade-db":
        print(AUDIT_DB.upgrade_and_report(args.db_url))
        return 0
    store = _store(args)
    if args.command == "verify-local":
        local = parse_jsonl(args.log.read_text("utf-8"))
        report = store.compare_local(f"{args.user}/{args.workspace}", local)
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    if args.command == "checkpoint":
        print(json.dumps(store.checkpoint(), indent=2))
        return 0
    print(f"pruned {store.prune(args.days)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
