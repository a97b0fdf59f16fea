"""Parses a Prometheus text exposition (stdin) with Prometheus's own Python client parser and
prints its samples as JSON: [{"name", "labels", "value", "type"}]. A text the parser rejects
makes this exit non-zero (tests/health.rs)."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        value = s.value
        if math.isinf(value) or math.isnan(value):
            value = str(value)
        samples.append({"name": s.name, "labels": s.labels, "value": value, "type": family.type})
json.dump(samples, sys.stdout)
