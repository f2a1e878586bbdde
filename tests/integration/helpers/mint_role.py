#!/usr/bin/python3
"""A stand-in for a cloud IAM token helper (creds=exec:): mints a real
Postgres role that may log in for TTL seconds and prints it as pglease's
credential JSON. Usage: mint_role.py SOCKET_DIR PORT TTL [fail|hang]"""
import datetime
import secrets
import sys
import time

import psycopg

sock, port, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else ""
if mode == "fail":
    print("cannot reach the token service", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
name = "pgl_exec_" + secrets.token_hex(4)
password = secrets.token_urlsafe(18)
until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
with psycopg.connect(host=sock, port=port, user="postgres", dbname="postgres",
                     autocommit=True) as c:
    c.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE pgl_exec "
              f"VALID UNTIL '{until.isoformat()}'")
# What a chatty helper might say; pglease must not log the password.
print(f"minted {name} with password {password}", file=sys.stderr)
print('{"username": "%s", "password": "%s", "expires_at": "%s"}'
      % (name, password, until.strftime("%Y-%m-%dT%H:%M:%SZ")))
