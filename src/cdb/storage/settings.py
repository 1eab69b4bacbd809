"""The database's settings (POSTGRES_*, DATABASE_URL, CDB_DB_WRITE_TIMEOUT_S)."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field, SecretStr

from cdb.partsettings import PartSettings


class StorageSettings(PartSettings):
    """PostgreSQL settings; field ``x_y`` is variable ``X_Y``."""


    postgres_host: str | None = None
    postgres_port: int = Field(5432, ge=1, le=65535)
    postgres_user: str | None = None
    postgres_password: SecretStr | None = None
    postgres_db: str = "cdb"
    database_url: SecretStr | None = None
    """Full SQLAlchemy URL; overrides the POSTGRES_* variables."""
    cdb_db_write_timeout_s: float = Field(30.0, gt=0)
    """db_writer gives up one write after this (a blackholed database) and retries."""

    def postgres_url(self) -> str:
        """SQLAlchemy URL of the configured PostgreSQL (password included; never log it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        auth = quote(self.postgres_user or "", safe="")
        if self.postgres_password is not None and self.postgres_password.get_secret_value():
            auth += ":" + quote(self.postgres_password.get_secret_value(), safe="")
        return (
            f"postgresql+asyncpg://{auth}@{self.postgres_host}:{self.postgres_port}/"
            f"{self.postgres_db}"
        )
