"""Service settings, read from the environment (prefix ``SEMREC_``) or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEMREC_", env_file=".env", extra="ignore")

    index_dir: Path = Field(Path("out/index"), description="directory written by `semrec index`")
    model: str | None = Field(None, description="embedder name or path; None = the one the index was built with")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_k: int = Field(100, ge=1, le=1000, description="largest k a request may ask for")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get a 413")
