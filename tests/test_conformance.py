"""The conformance matrix: one test per case (fixture × format × runtime × device × batch)."""


def test_case(harness_case, harness_benchmark):
    result = harness_benchmark(harness_case)
    # A pass must carry the evidence it was judged on.
    assert result.metrics, "a passing case has metrics for every output"
    assert result.timing.first_ms is not None and result.timing.first_ms > 0
