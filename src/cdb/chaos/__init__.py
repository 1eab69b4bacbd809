"""The test coordinator: YAML chaos scenarios run against a pipeline it starts.

A scenario (``scenarios/*.yaml``) is checked against a published JSON Schema with
every problem located by line (``source``, ``schema``, ``validate``), turned into
frozen Structs (``model``) and its timeline into an ordered plan (``timeline``). The
``runner`` starts a pipeline (``targets``: embedded in this process, or distributed
as processes over throwaway Redis and PostgreSQL), checks the steady state, injects
faults on the timeline (``faults``; each registers its undo on an ``UndoStack``),
samples probes (``probes``), records everything it can observe (``journal``), then
checks invariants over the whole recording (``invariants``), measures times to
detect, trip and recover (``measure``) and gives a verdict (``verdict``): pass,
fail, or unknown when a fault demonstrably did not take effect or a feature is
missing. ``reports`` writes the JSON journal, JUnit XML and an HTML page.

Faults, actions, probes, invariants and capabilities live in registries
(``registry``), so features that land later plug in without touching the runner.
"""
