"""The test coordinator: YAML chaos scenarios run against a pipeline it starts.

``scenario``: a scenario file (``scenarios/*.yaml``) checked against a published JSON
Schema with every problem located by line, turned into frozen Structs and its timeline
into an ordered plan; the registries of what a scenario can name. ``run``: the runner
starts a pipeline (``targets``: embedded in this process, or distributed as processes
over throwaway Redis and PostgreSQL), checks the steady state, injects faults on the
timeline (``faults``; each registers its undo on an ``UndoStack``) and records
everything it can observe. ``checks``: probes, invariants over the whole recording,
times to detect, trip and recover, and the verdict: pass, fail, or unknown when a fault
demonstrably did not take effect or a step could not run. ``reports``: the JSON
journal, JUnit XML and an HTML page. ``proxy``: the Toxiproxy-compatible fault proxy.
"""
