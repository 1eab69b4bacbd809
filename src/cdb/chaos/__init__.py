"""The test coordinator: YAML chaos scenarios run against a pipeline.

Layered, each package importing only those above it in this list:

``scenario``: the format; a file checked against a JSON Schema with every problem
located by line, turned into frozen Structs, its timeline into an ordered plan, and
the registries of what a scenario can name. ``history``: what a run records (samples,
activities, events) and the clock that stamps it. ``targets``: the pipeline a run
drives (embedded, distributed over throwaway servers, or attached to a running one).
``faults``: the steps (faults with their undo and effect check, actions, probes).
``checks``: invariants over the whole history, measurements, leaks and the verdict
(pass, fail, or unknown when a fault did not take effect or a check examined nothing).
``reports``: the frozen run record, JSON journal, JUnit XML and HTML. ``run``: the
runner that plans, samples and concludes, and ``run-all``. ``soak``: the seeded
nemesis, shrinking and the gateway load. ``proxy``: the Toxiproxy-compatible proxy.
"""
