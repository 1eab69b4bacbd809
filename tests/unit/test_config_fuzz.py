"""Fuzz of the settings loader: any environment gives settings or one ConfigError."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.bus.settings import NAMESPACE_PATTERN
from cdb.config import Settings, load_settings
from cdb.errors import ConfigError

_NAMES = sorted(name.upper() for name in Settings.model_fields)
_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["inf", "-inf", "nan", "1e999", "9" * 5000, "-1", "0", "info", "INFO",
                     "prod-1", "prod_1", "PROD.1", "x", "true", "[/]", '[{"kind": 1}]']),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats().map(str),
)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(env=st.dictionaries(st.sampled_from(_NAMES), _values, max_size=6))
def test_any_environment_gives_settings_or_a_config_error(env: dict[str, str]) -> None:
    environ = {**env, "CDB_SECRETS_DIR": "/nonexistent"}
    try:
        s = load_settings(environ=environ)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = []
    if problems:
        assert all(":" in p for p in problems)
        return
    for name in Settings.model_fields:
        value = getattr(s, name)
        if isinstance(value, float):
            assert math.isfinite(value), name
    if s.service_instance_name:
        assert NAMESPACE_PATTERN.fullmatch(s.service_instance_name)
    s.risk_limits()
    s.ess_config()
    s.market_shapes()
