#!/usr/bin/env python3
"""Medians and ratios from criterion's results (target/criterion), as tables for BENCHMARKS.md.

Run after `cargo bench -p airmy-verify-benches --bench verify`:

    python3 scripts/bench-report.py [TARGET_DIR]

Every ratio compares two medians from the same run. For signature checks it is throughput
against the pre-keyed raw HMAC (1.00 = as fast as the floor, higher is faster); for verify +
parse it is time against raw HMAC + a plain serde parse (1.00 = the floor, lower is faster).
"""
import json
import os
import sys

target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target")
root = os.path.join(target, "criterion")


def median_ns(*parts):
    path = os.path.join(root, *parts, "new", "estimates.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


def fmt_time(ns):
    if ns is None:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3f} µs"
    return f"{ns:.1f} ns"


SIZES = [("256B", 256), ("1KiB", 1024), ("64KiB", 65536), ("1MiB", 1 << 20)]
ROWS = [
    ("raw_hmac_prekeyed", "raw pre-keyed HMAC-SHA256 on a decoded tag (floor)"),
    ("raw_hex_and_hmac", "raw hex decode + pre-keyed HMAC-SHA256 (floor of a whole check)"),
    ("airmy_header_and_signature", "`Verifier::verify` of a mismatching signature (header + intake + HMAC)"),
    ("airmy_header_and_signature_while_waking", "the same, while another thread wakes every ms (control)"),
    ("airmy_header_and_signature_while_swapping", "the same, while another thread swaps the secrets every ms"),
    ("svix_webhook_verify", "Svix crate `Webhook::verify` (peer)"),
]

print("### Signature verification (group `signature`)\n")
print("| size | implementation | median | throughput | vs raw HMAC | vs raw hex + HMAC |")
print("|---|---|---|---|---|---|")
for label, size in SIZES:
    floor = median_ns("signature", "raw_hmac_prekeyed", label)
    whole = median_ns("signature", "raw_hex_and_hmac", label)
    for key, name in ROWS:
        m = median_ns("signature", key, label)
        if m is None:
            continue
        gbps = size / m  # bytes per ns = GB/s
        ratio = f"{floor / m:.3f}x" if floor else "n/a"
        ratio2 = f"{whole / m:.3f}x" if whole else "n/a"
        print(f"| {label} | {name} | {fmt_time(m)} | {gbps:.3f} GB/s | {ratio} | {ratio2} |")

print("\n### Verify + parse of a 1 KiB `run.completed` (group `verify_parse_1KiB`)\n")
print("| implementation | median | vs floor (time) |")
print("|---|---|---|")
floor = median_ns("verify_parse_1KiB", "raw_hmac_plus_serde")
for key, name in [
    ("raw_hmac_plus_serde", "raw hex + HMAC + serde_json derive into the same struct (floor)"),
    ("airmy_verify_event", "`verify(..)?.take_event::<Event>()` (+ freshness)"),
    ("airmy_verify_event_typed", "`verify(..)?.take_event::<RunCompleted>()` (+ freshness)"),
    ("airmy_verify_raw", "`verify(..)?.into_bytes()` (+ freshness)"),
]:
    m = median_ns("verify_parse_1KiB", key)
    if m is None:
        continue
    ratio = f"{m / floor:.3f}x" if floor else "n/a"
    print(f"| {name} | {fmt_time(m)} | {ratio} |")

print("\n### Idempotency guard overhead per request (group `idempotency`)\n")
print("| receiver (axum layer + extractor, oneshot) | median | vs no guard (time) |")
print("|---|---|---|")
floor = median_ns("idempotency", "no_guard")
for key, name in [
    ("no_guard", "no guard"),
    ("memory_guard", "in-memory guard (`MemoryStore`)"),
    ("redis_guard", "Redis guard (`RedisStore`, local redis-server)"),
]:
    m = median_ns("idempotency", key)
    if m is None:
        continue
    ratio = f"{m / floor:.2f}x (+{fmt_time(m - floor)})" if floor else "n/a"
    print(f"| {name} | {fmt_time(m)} | {ratio} |")
