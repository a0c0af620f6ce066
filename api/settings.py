"""The service's one settings object, read from the environment (prefix ``SEMREC_``) or a ``.env``
file. Nested settings are JSON (``SEMREC_RERANK='{"top_n": 20}'``) or one variable per field
(``SEMREC_SEARCH__LLM=smollm2``). Lists are JSON, e.g. ``SEMREC_VARIANTS='[{"name": "a", "share":
0.5}, {"name": "b", "share": 0.5, "candidates": {"covisit": 0}}]'``.

:meth:`Settings.pipeline_config` turns them into the ``ranker.pipeline.PipelineConfig`` of a
variant; with no setting changed it is ``PipelineConfig()``, the config the evaluation harness runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ranker.pipeline import PipelineConfig
from ranker.rerank import FusionWeights, RerankConfig
from retriever.profiles import ProfileConfig
from retriever.search import SearchConfig

from .experiments import Variant, check_shares
from .security import ApiKey

DEV_PSEUDONYM_KEY = "semrec-dev-key-change-me"
DEMO_REVIEWS = Path(__file__).resolve().parent.parent / "data" / "demo" / "reviews.jsonl"
_RERANK, _WEIGHTS = RerankConfig(), FusionWeights()


class RerankSettings(BaseModel):
    """The reranking stage (``ranker.rerank``): ``SEMREC_RERANK='{"top_n": 20, "similar": true}'``."""

    top_n: int = Field(_RERANK.top_n, ge=1, le=500, description="candidates scored by the cross-encoder per list")
    reranker: float = Field(_WEIGHTS.reranker, ge=0, description="fusion weight of the reranker score")
    retrieval: float = Field(_WEIGHTS.retrieval, ge=0, description="fusion weight of the retrieval score")
    popularity: float = Field(_WEIGHTS.popularity, ge=0, description="fusion weight of log(1 + interactions)")
    mmr_lambda: float = Field(_RERANK.mmr_lambda, ge=0, le=1, description="MMR relevance weight; 1 = no "
                                                                            "diversification")
    similar: bool = Field(_RERANK.similar, description="also rerank similar-item lists (context: the product)")
    search: bool = Field(_RERANK.search, description="also rerank search results (context: the query)")

    def config(self) -> RerankConfig:
        return RerankConfig(top_n=self.top_n, weights=FusionWeights(self.reranker, self.retrieval, self.popularity),
                            mmr_lambda=self.mmr_lambda, similar=self.similar, search=self.search)


class SearchSettings(BaseModel):
    """The search box (``retriever.search``): ``SEMREC_SEARCH='{"llm": "smollm2"}'`` or ``SEMREC_SEARCH__LLM``."""

    llm: str = Field("", description="LLM for query expansion ('smollm2', a hub id or a folder); empty = none")
    llm_budget_s: float = Field(SearchConfig.llm_budget_s, gt=0, le=30, description="longest a search waits for "
                                                                                     "the LLM")
    llm_default: bool = Field(SearchConfig.llm, description="use the LLM when a request does not say (slow on CPU)")
    expand: bool = Field(SearchConfig.expand, description="catalog + feedback expansion when a request does not say")
    vocab_cache_dir: Path | None = Field(None, description="where embedded vocabularies are cached; "
                                                           "default: <index_dir>/search-cache")
    suggest_min_users: int = Field(3, ge=2, le=1000, description="distinct shoppers (or client addresses) a past "
                                                                 "query needs before /suggest offers it")
    min_relevance: float = Field(SearchConfig.min_relevance, ge=0, le=1, description="hits with a lower calibrated "
                                                                                      "relevance are left out; 0 = "
                                                                                      "no cut-off")
    enrich_model: str = Field("smollm2", description="generator of the synthetic shopper queries (`semrec enrich`, "
                                                     "upserts): 'smollm2', a hub id or a local folder")
    ranking_dir: Path | None = Field(None, description="a learned search ranking (`python -m evaluation.search_ltr "
                                                       "--out DIR`: a version dir or a root of vNNNN versions) in "
                                                       "place of the tuned fusion; None = the fusion, which it did "
                                                       "not beat on the evaluation sets (README, Results: Search)")
    enrich_upserts: bool = Field(True, description="enrich upserted items in the background when the index was "
                                                   "enriched (`semrec enrich`)")

    def config(self) -> SearchConfig:
        return SearchConfig(expand=self.expand, llm=self.llm_default, llm_budget_s=self.llm_budget_s,
                            min_relevance=self.min_relevance)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEMREC_", env_file=".env", extra="ignore",
                                      env_nested_delimiter="__")

    index_dir: Path = Field(Path("out/index"), description="directory written by `semrec index`")
    db_path: Path = Field(Path("out/events.db"), description="SQLite event log")
    db_url: str | None = Field(None, pattern=r"^postgres(ql)?://", description=(
        "PostgreSQL for the event log and the catalog feed (postgresql://user:password@host:5432/db): workers on "
        "several machines share state through it; None = SQLite at db_path and the index's wal.jsonl"))
    vector_store: str = Field("faiss", pattern=r"^(faiss|milvus://.+)$", description=(
        "faiss (in each process), milvus:///path/file.db (Milvus Lite, one process) or milvus://host:19530 "
        "(a Milvus server, shared by the workers; with several workers, set db_url too)"))
    model: str | None = Field(None, description="embedder name or path; None = the one the index was built with")
    ranker_dir: Path | None = Field(None, description="reranker version dir, or a root of vNNNN versions (the "
                                                      "newest is loaded); None = no cross-encoder")
    models_dir: Path | None = Field(None, description="learned parts written by `semrec train` (MF, history "
                                    "encoder, learned ranking): a version dir or a root of vNNNN versions (the "
                                    "newest is loaded); None = <index_dir>/models when it exists")
    ranker_variant: str | None = Field(None, pattern="^(fp32|int8)$", description="None = as trained")
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get a 413")
    max_events_per_request: int = Field(1000, ge=1, le=100_000)
    demo: bool = Field(False, description="the bundled demo (`semrec demo`): allows the development pseudonym key")
    pseudonym_key: str | None = Field(None, min_length=8, description="secret for the keyed hash of user ids; "
                                                                      "required outside the demo")
    half_life_days: float = Field(ProfileConfig.half_life_days, gt=0, description="how fast a shopper's past "
                                                                                  "interest fades")
    exclude_purchased: bool = Field(PipelineConfig.exclude_purchased, description="leave already purchased "
                                                                                  "items out of recommendations")
    in_stock_only: bool = Field(PipelineConfig.in_stock_only, description="leave out-of-stock items out of "
                                                                          "personal feeds and widgets (a request's "
                                                                          "in_stock filter overrides it)")
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

    @model_validator(mode="after")
    def _pseudonym_key(self) -> Settings:
        if self.pseudonym_key is None:
            if not self.demo:
                raise ValueError("pseudonym_key: set SEMREC_PSEUDONYM_KEY to a secret of your own (user ids are "
                                 "stored only as a keyed hash of it); only the demo runs with a development key")
            self.pseudonym_key = DEV_PSEUDONYM_KEY
        elif self.pseudonym_key == DEV_PSEUDONYM_KEY and not self.demo:
            raise ValueError("pseudonym_key: the development key is for the demo only; set a secret of your own")
        return self

    def half_lives(self) -> list[float]:
        """Every popularity half-life (days) a variant may ask for: the interaction state keeps one
        decayed counter per half-life."""
        cfgs = [self.pipeline_config(v).candidates for v in self.variants]
        return sorted({d for c in cfgs for d in (c.popular_days, c.trending_days)})

    def pipeline_config(self, variant: Variant | None = None) -> PipelineConfig:
        """The pipeline config of ``variant`` (None: the settings without a variant's overrides)."""
        base = PipelineConfig()
        cfg = replace(base, profile=replace(base.profile, half_life_days=self.half_life_days),
                      rerank=self.rerank.config(), exclude_purchased=self.exclude_purchased,
                      in_stock_only=self.in_stock_only)
        if variant is None:
            return cfg
        return replace(cfg, candidates=variant.candidate_config(cfg.candidates), use_reranker=variant.rerank,
                       merchandising=variant.merchandising, variant=variant.name,
                       search=variant.search_changes())


def cli_settings(**overrides) -> Settings:
    """The settings a CLI command runs with: the environment / ``.env`` plus its options. The one
    place the CLI reads them (the pseudonym key above all)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
