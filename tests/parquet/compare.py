"""Compares a Parquet file of `ledger export --parquet`, read by DuckDB (the `duckdb` package),
with the CSV export of the same table, row for row and field for field: an empty CSV field must be
NULL, an integer or a number the same value, a flag the same 0/1, a time the same instant to the
nanosecond, text the same text. Prints {"rows": N, "types": {column: DuckDB type}} as JSON; a
difference exits 1 naming its row and column.

usage: compare.py FILE.csv FILE.parquet"""
import csv
import datetime
import json
import re
import sys

import duckdb

csv_path, parquet_path = sys.argv[1], sys.argv[2]
with open(csv_path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]

con = duckdb.connect()
described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [parquet_path]).fetchall()
types = {name: t for name, t, *_ in described}
if list(types) != header:
    sys.exit(f"columns differ: parquet {list(types)} csv {header}")
# Times as nanoseconds since the epoch, so no precision is lost on the way to Python.
select = ", ".join(
    f'epoch_ns("{c}")' if types[c].startswith("TIMESTAMP") else f'"{c}"' for c in header
)
got = con.execute(f"SELECT {select} FROM read_parquet(?)", [parquet_path]).fetchall()
if len(got) != len(rows):
    sys.exit(f"{len(got)} rows in parquet, {len(rows)} in csv")


def nanos(text):
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"not RFC 3339: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = int(datetime.datetime.fromisoformat(m.group(1) + zone).timestamp())
    return whole * 1_000_000_000 + int((m.group(2) or "").ljust(9, "0"))


def same(text, value, kind):
    if text == "":
        return value is None
    if value is None:
        return False
    if kind.startswith("TIMESTAMP"):
        return nanos(text) == value
    if kind == "BOOLEAN":
        return {"0": False, "1": True, "false": False, "true": True}[text] == value
    if kind == "BIGINT":
        return int(text) == value
    if kind == "DOUBLE":
        return float(text) == value
    return text == value


for i, (want, have) in enumerate(zip(rows, got), start=1):
    for c, text, value in zip(header, want, have):
        if not same(text, value, types[c]):
            sys.exit(f"row {i}, column {c}: csv {text!r}, parquet {value!r} ({types[c]})")
json.dump({"rows": len(rows), "types": types}, sys.stdout)
