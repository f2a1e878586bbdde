"""Shared by the Python driver scenarios: the target from argv, a transcript
printed as one JSON value per line (what test_drivers.py compares)."""
import datetime
import decimal
import json
import sys

# The values every scenario sends as parameters and reads back.
INT = 42
TEXT = "h\u00e9llo, 'w\u00f6rld'"
BYTEA = bytes([0, 1, 2, 127, 128, 255])
NUMERIC = decimal.Decimal("12345678901234567890.0123456789")
TS = datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)
TSTZ = datetime.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=datetime.timezone.utc)


def target():
    return json.loads(sys.argv[1])


def norm(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()
    if isinstance(v, decimal.Decimal):
        return "numeric:" + str(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


class Transcript:
    def __init__(self):
        self.lines = []

    def __call__(self, label, value):
        line = json.dumps([label, norm(value)], ensure_ascii=True, sort_keys=True)
        self.lines.append(line)
        print(line, flush=True)
