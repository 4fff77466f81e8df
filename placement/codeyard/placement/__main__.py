"""`python -m codeyard.placement {upgrade-db,rotate-keys,generate-key,serve}`.

The database URL comes from `--db-url` or `CODEYARD_PLACEMENT_DB_URL`; keys from
`CODEYARD_PLACEMENT_CRYPT_KEY` (see `crypto.py`). `serve [--config FILE]
[--PlacementService.<name>=...]` runs the admin service (`service.config`).
"""

from __future__ import annotations

import argparse
import sys

from .crypto import KEY_ENV, CredentialCipher, key_fingerprint
from .database import REGISTRY_DB, db_url_from_env, open_db
from .registry import Registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codeyard.placement")
    parser.add_argument("--db-url", default=db_url_from_env())
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "upgrade-db", help="back up (SQLite) and upgrade the schema to the newest revision"
    )
    sub.add_parser(
        "rotate-keys", help=f"re-encrypt every credential under the first key in ${KEY_ENV}"
    )
    sub.add_parser("generate-key", help="print a new key to put first in the key setting")
    sub.add_parser("serve", help="run the admin service (as a JupyterHub service)", add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "generate-key":
        print(CredentialCipher.generate_key())
        return 0
    if args.command == "upgrade-db":
        print(REGISTRY_DB.upgrade_and_report(args.db_url))
        return 0
    if args.command == "rotate-keys":
        cipher = CredentialCipher()
        count = Registry(open_db(args.db_url), cipher).rotate_keys()
        print(f"re-encrypted {count} credentials under key {key_fingerprint(cipher.keys[0])}")
        return 0
    return 2


def _serve(argv: list[str]) -> int:
    import asyncio

    from .service.config import PlacementServiceApp

    app = PlacementServiceApp()
    app.initialize(argv)
    asyncio.run(app.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
