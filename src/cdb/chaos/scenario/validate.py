"""Validation of scenario files: every problem, with its JSON path and line.

Three passes, each reporting all it finds: the YAML itself (syntax with line and
column, duplicate keys), the JSON Schema (with messages rewritten to say what to do:
the unknown key and the closest known one, the missing one of several keys, what a
duration looks like), then what a schema cannot say (step names unique, references
to steps and probes that exist, services and symbols the pipeline has, faults
available in the scenario's modes). ``${name}`` in strings is replaced from
``configuration`` first (Chaos Toolkit style; a whole-string reference keeps the
value's type).

What a file would execute (``process``, ``python`` and ``http`` providers, ``env``
configuration) is listed as warnings, so ``validate`` shows it before anything runs;
values read from the environment are masked in every message. The expanded
timeline is bounded (``MAX_STEPS``): nested ``repeat`` inside ``parallel`` multiplies.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Any, Final, Literal, cast

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from cdb.chaos.scenario import model, schema, source
from cdb.chaos.scenario.registry import ACTIONS, DURATION_PATTERN, FAULTS, INVARIANTS, PROBES
from cdb.chaos.scenario.source import Located, Path, Position, json_path
from cdb.chaos.scenario.timeline import TimelineError, expand, names, resolve

Severity = Literal["error", "warning"]
_REF: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
MAX_STEPS: Final = 100_000
"""Steps the timeline may expand to (repetitions and groups multiplied out)."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with a scenario."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    severity: Severity = "error"

    def render(self, file: str = "") -> str:
        where = f"{file}:" if file else ""
        if self.line is not None:
            where += f"{self.line}:{self.column or 1}:"
        return f"{where} {self.severity}: {self.path}: {self.message}".lstrip()


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """What validation found; ``scenario`` is set when there is no error."""

    file: str
    problems: tuple[Problem, ...]
    scenario: model.Scenario | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema.build())


def validate_file(path: str | FilePath) -> Result:
    """Validate the scenario file at ``path``."""
    file = str(path)
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Result(file=file, problems=(Problem(path="$", message=f"cannot read: {exc}"),))
    return validate_text(text, file)


def validate_text(text: str, file: str = "<scenario>") -> Result:
    """Validate scenario ``text`` (``file`` names it in messages)."""
    try:
        located = source.load(text)
    except source.YamlSyntaxError as exc:
        pos = exc.position
        return Result(file=file, problems=(Problem(
            path="$", message=f"invalid YAML: {exc.message}",
            line=pos.line if pos else None, column=pos.column if pos else None),))
    problems = [_at(p.path, p.message, p.position) for p in located.problems]
    if not isinstance(located.data, dict):
        got = "an empty file" if located.data is None else type(located.data).__name__
        problems.append(_at("$", f"a scenario is a mapping (title: ..., timeline: ...), "
                                 f"not {got}", located.position(())))
        return Result(file=file, problems=tuple(problems))
    data, subst, secrets = _substitute(located)
    problems += subst
    # A value whose substitution failed is reported once, not again by the schema.
    failed = {p.path for p in subst} | {p.path for p in located.problems}
    problems += sorted((p for p in _schema_problems(data, located) if p.path not in failed),
                       key=_order)
    if any(p.severity == "error" for p in problems):
        return Result(file=file, problems=_masked(problems, secrets))
    scenario = model.build(data, file, secrets)
    too_many = _too_many_steps(scenario.timeline, located)
    if too_many is not None:
        return Result(file=file, problems=_masked([*problems, too_many], secrets))
    problems += _semantic_problems(scenario, located)
    problems += [_at(e.path, f"{e.what} (a scenario file is code: cdb scenario run needs "
                             "--allow-exec)", _position_of(e.path, located), "warning")
                 for e in scenario.executes]
    problems = list(dict.fromkeys(problems))  # a repeated step reports once
    ok = not any(p.severity == "error" for p in problems)
    return Result(file=file, problems=_masked(problems, secrets),
                  scenario=scenario if ok else None)


def _masked(problems: list[Problem], secrets: tuple[str, ...]) -> tuple[Problem, ...]:
    if not secrets:
        return tuple(problems)
    return tuple(msgspec.structs.replace(p, message=model.mask_secrets(p.message, secrets))
                 for p in problems)


def _too_many_steps(entries: tuple[model.TimelineEntry, ...], located: Located) -> Problem | None:
    """The first entry whose expansion passes ``MAX_STEPS``, counted without expanding."""
    total = 0

    def count(entry: model.TimelineEntry) -> int:
        times = entry.repeat.times if entry.repeat else 1
        inner = 1 if not entry.parallel else sum(count(c) for c in entry.parallel)
        return times * inner

    for entry in entries:
        n = count(entry)
        total += n
        if total > MAX_STEPS:
            return _at(entry.path, f"the timeline expands to more than {MAX_STEPS:,} steps "
                       f"(this entry alone to {n:,}: repeat inside parallel multiplies)",
                       _position_of(entry.path, located))
    return None


def _order(p: Problem) -> tuple[int, int, str]:
    return (p.line or 0, p.column or 0, p.message)


def _at(path: str, message: str, pos: Position | None, severity: Severity = "error") -> Problem:
    return Problem(path=path, message=message, line=pos.line if pos else None,
                   column=pos.column if pos else None, severity=severity)


# -- configuration -----------------------------------------------------------------------


def _substitute(located: Located) -> tuple[dict[str, Any], list[Problem], tuple[str, ...]]:
    data: dict[str, Any] = located.data
    problems: list[Problem] = []
    config: dict[str, Any] = {}
    secrets: list[str] = []
    raw = data.get("configuration")
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(value, dict) and value.get("type") == "env":
                env_key = str(value.get("key", ""))
                if env_key in os.environ:
                    config[key] = os.environ[env_key]
                    secrets.append(os.environ[env_key])
                elif "default" in value:
                    config[key] = value["default"]
                else:
                    problems.append(_at(
                        json_path(("configuration", key)),
                        f"environment variable {env_key} is not set and has no default",
                        located.position(("configuration", key))))
            else:
                config[key] = value
    out = {k: v for k, v in data.items()}
    for path, text in list(source.walk_strings(data)):
        if not path or path[0] == "configuration" or "${" not in text:
            continue
        missing = [m for m in _REF.findall(text) if m not in config]
        if missing:
            problems.append(_at(json_path(path), "unknown configuration "
                                + ", ".join(f"${{{m}}}" for m in missing), located.position(path)))
            continue
        whole = _REF.fullmatch(text)
        replaced: Any = config[whole.group(1)] if whole else _REF.sub(
            lambda m: str(config[m.group(1)]), text)
        _set(out, path, replaced)
    return out, problems, tuple(s for s in secrets if s)


def _set(root: dict[str, Any], path: Path, value: Any) -> None:
    # Copy on the way down so the loaded document stays as written.
    node: Any = root
    for part in path[:-1]:
        child = node[part]
        node[part] = dict(child) if isinstance(child, dict) else list(child)
        node = node[part]
    node[path[-1]] = value


# -- schema ------------------------------------------------------------------------------


def _schema_problems(data: dict[str, Any], located: Located) -> Iterator[Problem]:
    for error in _validator().iter_errors(data):
        yield from _explain(error, located)


def _explain(error: ValidationError, located: Located) -> Iterator[Problem]:
    path: Path = tuple(error.absolute_path)
    where = json_path(path)
    validator = error.validator
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        yield from _unknown_keys(error, path, located)
        return
    if validator == "oneOf" and _is_exclusive(error.validator_value):
        keys = [s["required"][0] for s in cast("list[Any]", error.validator_value)]
        present = [k for k in keys if isinstance(error.instance, dict) and k in error.instance]
        msg = (f"has {' and '.join(present)}; give exactly one of {', '.join(keys)}" if present
               else f"needs one of {', '.join(keys)}")
        yield _at(where, msg, located.position(path))
        return
    if validator in ("anyOf", "oneOf") and error.context:
        # Show the alternative that got furthest (deepest path), or a summary.
        best = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.message)))
        if len(best.absolute_path) > len(path):
            yield from _explain(best, located)
            return
        yield _at(where, _anyof_message(error), located.position(path))
        return
    yield _at(where, _message(error, path), located.position(path))


def _message(error: ValidationError, path: Path) -> str:
    validator = error.validator
    if validator == "enum":
        options = [str(o) for o in cast("list[Any]", error.validator_value)]
        found = error.instance
        hint = _suggest(found, options) if isinstance(found, str) else ""
        shown = ", ".join(options) if len(options) <= 12 else ", ".join(options[:12]) + ", ..."
        return f"{found!r} is not one of: {shown}{hint}"
    if validator == "pattern" and error.validator_value == DURATION_PATTERN:
        return f"{error.instance!r} is not a duration: use seconds or 500ms, 5s, 2m, 1h"
    if validator == "required":
        return error.message.replace("is a required property", "is required here")
    if validator == "const" and path and path[-1] == "type":
        return f"type must be {error.validator_value!r} here, not {error.instance!r}"
    return error.message


def _unknown_keys(error: ValidationError, path: Path, located: Located) -> Iterator[Problem]:
    schema_: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    allowed = list(schema_.get("properties") or [])
    patterns = schema_.get("patternProperties") or {}
    for key in cast("dict[str, Any]", error.instance):
        if key in allowed or not isinstance(key, str):
            continue
        if any(re.search(p, key) for p in patterns):
            continue
        yield _at(json_path((*path, key)), f"unknown key {key!r}{_suggest(key, allowed)}",
                  located.position((*path, key), key=True))


def _is_exclusive(alternatives: Any) -> bool:
    return isinstance(alternatives, list) and all(
        isinstance(s, dict) and list(s) == ["required"] and len(s["required"]) == 1
        for s in alternatives
    )


def _anyof_message(error: ValidationError) -> str:
    value = error.instance
    alternatives = cast("list[Any]", error.validator_value)
    if isinstance(alternatives, list) and any(
        isinstance(s, dict) and s.get("pattern") == DURATION_PATTERN for s in alternatives
    ):
        return f"{value!r} is not a duration: use seconds or 500ms, 5s, 2m, 1h"
    return f"{value!r} matches none of the allowed forms"


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- what the schema cannot say ---------------------------------------------------------


def _semantic_problems(scenario: model.Scenario, located: Located) -> list[Problem]:
    problems: list[Problem] = []

    def add(path_text: str, message: str, severity: Severity = "error") -> None:
        problems.append(_at(path_text, message, _position_of(path_text, located), severity))

    _check_timeline(scenario, add)
    pipe = scenario.pipeline
    if pipe.mode not in pipe.modes:
        add("$.pipeline.mode", f"mode {pipe.mode!r} is not among modes {list(pipe.modes)}")
    if pipe.market.source == "fake-binance" and "embedded" in pipe.modes:
        add("$.pipeline.market.source", "the fake-binance market runs on the wall clock, "
            "in distributed mode only; set pipeline.modes: [distributed]")
    for activity in (*scenario.method, *scenario.rollbacks):
        if activity.provider.type in _SHAPES:
            add(f"{activity.provider.path}.type", f"{activity.provider.type!r} shapes the "
                "market, which is generated before the run: put it on the timeline")
    providers = [a.provider for a in (*scenario.method, *scenario.rollbacks)]
    providers += [a.provider for a in (scenario.steady_state.probes if scenario.steady_state
                                        else ())]
    providers += [p.provider for p in scenario.probes]
    providers += [e.probe for e in scenario.expect if e.probe is not None]
    for provider in providers:
        _check_provider(provider, scenario, add)
    for inv in scenario.invariants:
        if inv.type not in INVARIANTS:
            add(inv.path, f"unknown invariant {inv.type!r}")
    _check_references(scenario, add)
    for i, shape in enumerate(pipe.market.shapes):
        if shape["symbol"] != "*" and shape["symbol"] not in pipe.market.symbols:
            add(f"$.pipeline.market.shapes[{i}].symbol",
                f"{shape['symbol']!r} is not a market symbol {list(pipe.market.symbols)}")
    return problems


def _check_timeline(scenario: model.Scenario, add: Any) -> None:
    seen: dict[str, str] = {}
    for name, path_text in names(scenario.timeline):
        if name in seen:
            add(f"{path_text}.name", f"step name {name!r} is already used at {seen[name]}")
        else:
            seen[name] = path_text
    for step in expand(scenario.timeline):
        _check_provider(step.provider, scenario, add)
        if scenario.duration is not None and step.end > scenario.duration:
            add(step.path, f"step {step.key!r} ends at {step.end:g}s, after the scenario's "
                           f"duration of {scenario.duration:g}s")
        if step.kind == "fault" and step.duration is None and step.provider.type in _HELD:
            add(step.path, f"fault {step.provider.type!r} has no duration: it stays on "
                           "until the end of the timeline", "warning")


def _check_references(scenario: model.Scenario, add: Any) -> None:
    steps = expand(scenario.timeline)
    sampled = {p.name for p in scenario.probes}
    if len(sampled) != len(scenario.probes):
        add("$.probes", "sampled probe names must be unique")
    for exp in scenario.expect:
        if exp.sampled and exp.sampled not in sampled:
            add(f"{exp.path}.sampled", f"no sampled probe named {exp.sampled!r}"
                + _suggest(exp.sampled, sorted(sampled)))
        for key, ref in (("from", exp.start), ("until", exp.end)):
            _check_ref(ref, steps, f"{exp.path}.{key}", add)
    for m in scenario.measurements:
        _check_ref(m.start, steps, f"{m.path}.from", add)
        if m.until and m.until.sampled and m.until.sampled not in sampled:
            add(f"{m.path}.until.sampled", f"no sampled probe named {m.until.sampled!r}")


_SHAPES: Final = frozenset({"flash_crash", "spike", "gap", "stale", "flat"})
_HELD: Final = frozenset({"stop", "redis_down", "postgres_down", "network", "network_down",
                          "exchange"})


def _check_ref(ref: model.TimeRef | None, steps: list[Any], path_text: str, add: Any) -> None:
    if ref is None or isinstance(ref, float):
        return
    try:
        resolve(ref, steps)
    except TimelineError as exc:
        add(path_text, str(exc))


def _check_provider(provider: model.Provider, scenario: model.Scenario, add: Any) -> None:
    registry = next((r for r in (FAULTS, ACTIONS, PROBES) if provider.type in r), None)
    if registry is None:
        return  # the schema reported it
    entry = registry.get(provider.type)
    pipe = scenario.pipeline
    usable = [m for m in pipe.modes if m in entry.modes]
    if not usable:
        add(f"{provider.path}.type",
            f"{entry.kind} {entry.name!r} works in {' and '.join(entry.modes)} mode only; "
            f"this scenario runs in {', '.join(pipe.modes)} (set pipeline.modes)")
    service = provider.params.get("service")
    if isinstance(service, str) and service not in ("*", *pipe.services):
        add(f"{provider.path}.service",
            f"service {service!r} is not started by this pipeline {list(pipe.services)}")
    symbol = provider.params.get("symbol")
    if isinstance(symbol, str) and symbol != "*" and symbol not in pipe.market.symbols:
        add(f"{provider.path}.symbol",
            f"{symbol!r} is not a market symbol {list(pipe.market.symbols)}")


def _position_of(path_text: str, located: Located) -> Position | None:
    return located.position(_parse_path(path_text))


_PART: Final = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]")


def _parse_path(text: str) -> Path:
    parts: list[str | int] = []
    for m in _PART.finditer(text):
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(m.group(3))
    return tuple(parts)
