"""Reads the OpenMetrics text of `ledger watch --metrics` on stdin with the prometheus_client
package's own parser, and prints it as JSON on stdout: one object per family (name, type, help,
unit) with its samples (name, labels, value). A text the parser refuses exits non-zero with its
error on stderr."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name,
        "type": f.type,
        "help": f.documentation,
        "unit": f.unit,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
json.dump(families, sys.stdout)
