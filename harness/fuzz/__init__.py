"""Differential fuzzing with hypothesis (`harness fuzz`): inputs, and small generated models, that make
runtimes disagree, shrunk to a minimal case and saved as regression fixtures.

Level 1, **inputs**: a strategy derived from a fixture's signature draws a batch (1 first, then odd
sizes), the other dynamic dimensions, a base (the fixture's own generator at a drawn seed and scale, or
a constant fill) and a few patched elements from an edge-value set (0, -0, subnormals, the float16 and
large float32 magnitudes; ±inf and NaN only where the fixture's ValueDomain says they are meaningful).
Each example runs through every selected (format, runtime) pair with the run-case Engine, so workers
stay warm and every verdict is the conformance matrix's own (same tolerances, same comparator).

Level 2, **models**: harness/fuzz/models.py draws small Keras graphs; each is a Fixture here, exported
by the same Exporter and run by the same Engine.

A disagreement (a `fail`, a `crash`/`timeout`, or an error at the run stage) is shrunk by hypothesis;
while shrinking, only the (format, runtime) pair that disagreed first is run. The minimal example is
replayed through every pair and saved under the regressions folder (inputs, every runtime's outputs,
the float64 oracle's, the first diverging layer of a Keras model); `regression_fixtures(folder)` turns
that folder back into fixtures for the conformance matrix. The pair is then set aside and the search
goes on until the budget is spent.

The rooms: `strategies` (what is drawn: value domains, examples, the input strategy, pinned inputs),
`models` (generated Keras models from a JSON spec, their float64 twin), `findings` (what a disagreement
is, its cause, the regression fixtures saved ones become, the run's report) and `search` (the Fuzzer,
which runs examples through the Engine, hypothesis' search and shrinking, both levels, `fuzz()`).
`findings`, `models` and `strategies` import neither TensorFlow nor hypothesis at module level, nor the
engine: the fixture registry loads saved regressions through them (fixtures/fuzz_regressions.py).
"""
