"""Service settings, read from the environment (prefix ``SEMREC_``) or a ``.env`` file.

Lists and objects are JSON, e.g. ``SEMREC_VARIANTS='[{"name": "a", "share": 0.5}, {"name": "b",
"share": 0.5, "candidates": {"covisit": 0}}]'``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .experiments import Variant, check_shares
from .security import ApiKey

DEV_PSEUDONYM_KEY = "semrec-dev-key-change-me"
DEMO_REVIEWS = Path(__file__).resolve().parent.parent / "data" / "demo" / "reviews.jsonl"


class RerankSettings(BaseModel):
    """The reranking stage (``ranker.serve``): ``SEMREC_RERANK='{"top_n": 20, "similar": true}'``."""

    top_n: int = Field(50, ge=1, le=500, description="candidates scored by the cross-encoder per list")
    reranker: float = Field(1.0, ge=0, description="fusion weight of the reranker score")
    retrieval: float = Field(1.0, ge=0, description="fusion weight of the retrieval score")
    popularity: float = Field(0.5, ge=0, description="fusion weight of log(1 + interactions)")
    mmr_lambda: float = Field(0.8, ge=0, le=1, description="MMR relevance weight; 1 = no diversification")
    similar: bool = Field(False, description="also rerank similar-item lists (context: the product itself)")
    search: bool = Field(False, description="also rerank search results (context: the query)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEMREC_", env_file=".env", extra="ignore")

    index_dir: Path = Field(Path("out/index"), description="directory written by `semrec index`")
    db_path: Path = Field(Path("out/events.db"), description="SQLite event log")
    model: str | None = Field(None, description="embedder name or path; None = the one the index was built with")
    ranker_dir: Path | None = Field(None, description="reranker version dir, or a root of vNNNN versions (the "
                                                      "newest is loaded); None = no cross-encoder")
    ranker_variant: str | None = Field(None, pattern="^(fp32|int8)$", description="None = as trained")
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get a 413")
    max_events_per_request: int = Field(1000, ge=1, le=100_000)
    pseudonym_key: str = Field(DEV_PSEUDONYM_KEY, min_length=8,
                               description="secret for the keyed hash of user ids; set your own in production")
    half_life_days: float = Field(30.0, gt=0, description="how fast a shopper's past interest fades")
    exclude_purchased: bool = Field(True, description="leave already purchased items out of recommendations")
    ab_salt: str = Field("semrec-ab-1", min_length=1, description="change it to reshuffle A/B buckets")
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="default", share=1.0)])
    report_dir: Path = Field(Path("runs/report"), description="evaluation report (PNG plots, results.md) "
                                                               "shown in the web console")
    shoppers_file: Path = Field(DEMO_REVIEWS, description="reviews file whose user ids the web console "
                                                          "lists as shoppers (ids are pseudonymised in the log)")
    auth: bool = Field(True, description="require API keys for writes (and for reads unless public_reads)")
    public_reads: bool = Field(True, description="read routes answer without a key")
    api_keys: list[ApiKey] = Field(default_factory=list, description="[{name, role, sha256}]; see `semrec keygen`")
    token_secret: SecretStr | None = Field(None, min_length=16,
                                           description="secret the shop's backend signs shopper tokens with "
                                                       "(`semrec token`); None = personal routes need a backend key")
    token_ttl_s: float = Field(900, gt=0, le=7 * 86_400, description="default lifetime of a shopper token")
    demo_tokens: bool = Field(False, description="demo only: POST /demo/token hands any shopper's token to the "
                                                 "page, standing in for the shop's backend; never in production")
    rate_per_minute: float = Field(6000, gt=0, description="requests per minute per key (or per address)")
    rate_burst: int = Field(200, ge=1)
    search_threads: int = Field(1, ge=1, le=256, description="FAISS threads per search; scale with workers")
    torch_threads: int = Field(1, ge=1, le=256, description="torch threads per request (query embedding)")
    follow_seconds: float = Field(0.25, gt=0, le=60, description="how often a worker applies other workers' writes")
    compact_log_mb: float = Field(32, gt=0, description="fold the index's write-ahead log into a new snapshot "
                                                        "(online) once it is this large")
    compact_retired: int = Field(1024, ge=1, description="renumber labels once more than this many (and half the "
                                                         "live count) belong to replaced or deleted items")
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed; none by default")

    @field_validator("variants")
    @classmethod
    def _shares(cls, v: list[Variant]) -> list[Variant]:
        return check_shares(v)
