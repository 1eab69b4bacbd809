"""The distributed bus's settings: Redis, the namespace, consumer groups, the disk buffer."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator

from cdb.resilience.settings import ResilienceSettings

NAMESPACE_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,57}[a-z0-9])?$")
"""A namespace: lowercase letters, digits and inner hyphens, at most 59 characters.
The PostgreSQL schema is ``cdb_`` plus the name with ``-`` as ``_``; with no ``_``,
no upper case and no other character allowed, two namespaces never share a schema
(as ``prod-1``, ``prod_1`` and ``PROD.1`` would), and ``cdb_`` + 59 fits PostgreSQL's
63-byte identifiers."""


class BusSettings(ResilienceSettings):
    """Redis, namespace and disk-buffer settings (with the backoff and breaker the bus
    uses); field ``x_y`` is variable ``X_Y``."""


    service_instance_name: str = ""

    redis_host: str | None = None
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0)
    redis_password: SecretStr | None = None
    redis_sentinels: str = ""
    """Comma-separated ``host:port`` of Redis Sentinels; with it, ``redis_master``."""
    redis_master: str = "mymaster"
    redis_socket_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for one Redis reply (a blackholed Redis fails after this)."""
    redis_retries: int = Field(1, ge=0)
    """redis-py retries of one command on a connection error, spaced by the backoff."""
    redis_min_replicas: int = Field(0, ge=0)
    """With replicas (Sentinel): a publish counts only once this many replicas have it
    (WAIT); otherwise it is buffered and retried, so a failover loses nothing."""
    redis_replica_timeout_s: float = Field(1.0, gt=0)
    """How long a publish waits for REDIS_MIN_REPLICAS."""
    redis_sentinel_poll_s: float = Field(1.0, gt=0)
    """How often the Sentinels are asked where the master is (a failover is followed
    within this)."""

    cdb_consumer: str = ""
    """Consumer name in the groups (default: service-hostname); stable across restarts."""
    cdb_claim_idle_s: float = Field(30.0, gt=0)
    cdb_drain_timeout_s: float = Field(10.0, gt=0)

    cdb_buffer_dir: str = ""
    """Directory of the producers' disk buffers (default $XDG_STATE_HOME/cdb, else
    ~/.local/state/cdb); one file per namespace and instance. Keep it on a volume."""
    cdb_buffer_path: str = ""
    """The disk buffer file itself (overrides CDB_BUFFER_DIR; one process per file)."""
    cdb_buffer_max_events: int = Field(1_000_000, ge=1)
    cdb_buffer_max_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """Bounds of the disk buffer; at either one CDB_BUFFER_FULL_POLICY applies."""
    cdb_buffer_full_policy: Literal["block", "reject"] = "block"
    """block: publishers wait for the flush (nothing dropped); reject: publish fails."""

    @field_validator("service_instance_name")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        if value and not NAMESPACE_PATTERN.fullmatch(value):
            raise ValueError(
                "use lowercase letters, digits and inner hyphens, at most 59 characters "
                "(e.g. prod-1): each name must map to its own PostgreSQL schema"
            )
        return value

    def redis_url(self) -> str:
        """``redis://`` URL of the configured Redis (password included; never log it)."""
        auth = ""
        if self.redis_password is not None and self.redis_password.get_secret_value():
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"
