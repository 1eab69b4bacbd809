"""The operator commands run against throwaway PostgreSQL servers."""

from tests.e2e.conftest import _servers_installed

__all__ = ["_servers_installed"]
