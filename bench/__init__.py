"""The performance bench (SPEC 6): ``python -m bench`` from the repository root.

Six scenarios run against the Runware simulator and the fake Discord of tests/fakes, each in its own
temporary directory; the results are printed as a table and written as JSON (bench/results.json)."""
