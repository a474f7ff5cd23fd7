"""bench/wrk.py's reading of wrk's report: socket errors count as failures, as non-2xx
answers do (a run whose connections time out must not pass on its throughput)."""

from __future__ import annotations

from tests.bench_module import load

REPORT = """Running 2s test @ http://127.0.0.1:1/ofrep/v1/evaluate/flags
  1 threads and 32 connections
  Latency Distribution
     99%    5.15ms
  28000 requests in 2.00s, 40.00MB read
{extra}Requests/sec:  14000.00
"""


def test_a_clean_run_has_no_failures():
    assert load("wrk").failures(REPORT.format(extra="")) == 0


def test_non_2xx_and_socket_errors_are_failures():
    wrk = load("wrk")
    assert wrk.failures(REPORT.format(extra="  Non-2xx or 3xx responses: 7\n")) == 7
    errors = "  Socket errors: connect 1, read 2, write 3, timeout 4\n"
    assert wrk.failures(REPORT.format(extra=errors)) == 10
    both = "  Socket errors: connect 0, read 0, write 0, timeout 5\n  Non-2xx or 3xx responses: 1\n"
    assert wrk.failures(REPORT.format(extra=both)) == 6
