"""Service configuration: one settings object from MODERATION_* env vars and a TOML file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Limits(BaseSettings):
    """Bounds on every input; anything larger is refused with a clear error."""

    model_config = SettingsConfigDict(extra="forbid")

    max_text_chars: int = 20_000
    max_media_items: int = 8
    max_media_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 20_000
    max_image_frames: int = 16
    max_payload_bytes: int = 40 * 1024 * 1024
    max_id_chars: int = 256
    # Videos: bytes (instead of max_media_bytes), duration, side, and the wall-clock budget
    # for sampling one (models.video_decode.VideoLimits has the rest).
    max_video_bytes: int = 200 * 1024 * 1024
    max_video_seconds: float = 600.0
    max_video_side: int = 4096
    video_decode_budget_s: float = 60.0
    max_context_bytes: int = 16 * 1024
    fetch_timeout_s: float = 5.0


# --- security (issue #9): per-key rate limits ---
class RateLimitSettings(BaseSettings):
    """Default rate limit per role, in `limits` notation (burst per second; sustained per
    minute); a key's own `rate_limit` overrides it, "none" disables. See moderation/rate_limit.py.
    """

    enabled: bool = True
    # Generous on purpose: they stop a runaway or abusive key, not shape normal traffic.
    service: str = "500/second;15000/minute"
    rights_holder: str = "50/second;1500/minute"
    reviewer: str = "50/second;1500/minute"
    admin: str = "200/second;6000/minute"


class ReviewSettings(BaseSettings):
    """Review queues: the priority formula's weights, lease length, console sessions.

    priority = severity_weight * severity + reach_weight * log10(1 + reach)
               + age_weight_per_hour * hours waiting
    """

    model_config = SettingsConfigDict(extra="forbid")

    severity_weight: float = Field(default=10.0, ge=0)
    reach_weight: float = Field(default=1.0, ge=0)
    age_weight_per_hour: float = Field(default=0.5, ge=0)
    # Severity of a category's score (0..1) is multiplied by this; unlisted categories: 1.
    category_severity: dict[str, float] = Field(default_factory=dict)
    # A bank match sent to review counts as this severe.
    bank_match_severity: float = Field(default=0.8, ge=0)
    lease_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    # Bulk decisions touch at most this many items per request.
    max_bulk_items: int = Field(default=200, ge=1, le=10_000)
    # Videos of items sent to review are kept for playback up to this size (MP4 and WebM,
    # which browsers play); larger ones show their thumbnail only. 0 keeps none.
    max_clip_bytes: int = Field(default=50 * 1024 * 1024, ge=0)


def _config_file() -> Path | None:
    explicit = os.environ.get("MODERATION_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("moderation.toml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Everything a deployment can change. Unset Redis URL means an embedded Redis."""

    model_config = SettingsConfigDict(
        env_prefix="MODERATION_", env_nested_delimiter="__", extra="ignore"
    )

    var_dir: Path = Path("var")
    database_url: str | None = None
    redis_url: str | None = None

    media_roots: list[Path] = Field(default_factory=list)
    allowed_uri_schemes: list[str] = Field(default_factory=lambda: ["https"])
    allowed_hosts: list[str] = Field(default_factory=list)
    # Only for tests and closed networks: lets fetches reach loopback/private addresses.
    fetch_allow_private: bool = False

    limits: Limits = Field(default_factory=Limits)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)

    policy_path: Path | None = None
    keyword_lists_dir: Path | None = None

    # One solo-pool process per core measured best for latency on small machines (see
    # BENCHMARKS.md): no parent-to-child hop for large payloads. Scale with more processes.
    worker_concurrency: int = 1
    worker_pool: str = "solo"
    task_soft_time_limit_s: float = 20.0
    task_time_limit_s: float = 30.0
    api_result_timeout_s: float = 15.0
    # The video queue's task: sampling (limits.video_decode_budget_s), classifying and
    # matching every video of one item.
    video_task_soft_time_limit_s: float = 270.0
    video_task_time_limit_s: float = 300.0
    # How long a task taken by a worker that died stays invisible before another worker
    # gets it. Unset: twice the longest hard time limit plus 30 s, so a live task is never
    # run twice. Lower only where tasks are short (tests).
    broker_visibility_timeout_s: float | None = None
    # Final verdicts of video items (and later events) are POSTed here, signed with
    # HMAC-SHA256 of the secret; retried with exponential backoff up to this many attempts.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    index_refresh_interval_s: float = 0.2
    # Snapshots of the bank indexes, so a restarting worker reads arrays instead of every
    # bank entry (a cache, keyed by database). Default: next to the default SQLite database;
    # empty disables.
    index_snapshot_dir: Path | None = Field(default_factory=lambda data: data["var_dir"] / "index")
    # faiss (OpenMP) threads per index search; workers run one process per core.
    index_search_threads: int = Field(default=1, ge=1)

    # --- image classifiers (the policy's `image_models`) ---
    # Threads per model session (onnxruntime intra/inter-op, torch). Workers are one process
    # per core, so 1: more only helps a process that has several cores to itself.
    image_model_threads: int = Field(default=1, ge=1, le=64)
    # Images per inference call; an item's images are classified together, in chunks of this.
    image_model_max_batch: int = Field(default=8, ge=1, le=256)
    # Where models built at first use are kept (the builtin text model's ONNX encoder):
    # shared by the workers of one machine, rebuilt only when the weights change.
    model_cache_dir: Path = Field(default_factory=lambda data: data["var_dir"] / "models")

    # --- provenance anchoring (chain/, moderation/anchoring.py) ---
    # A batch is cut once this many leaves wait, or once the oldest has waited
    # anchor_interval_s; the periodic task `moderation.anchor.run` looks every anchor_tick_s.
    anchor_batch_size: int = Field(default=10_000, ge=1)
    anchor_interval_s: float = Field(default=60.0, gt=0)
    anchor_tick_s: float = Field(default=5.0, gt=0)
    # One transaction anchors at most this many leaves (the cost per batch is flat).
    anchor_max_batch: int = Field(default=200_000, ge=1, le=10_000_000)
    # A batch is confirmed once its block has this many blocks on top, counting its own.
    anchor_confirmations: int = Field(default=3, ge=1, le=1000)
    # embedded: an in-process EVM journaled under anchor_chain_dir; rpc: any EVM node.
    anchor_backend: Literal["embedded", "rpc"] = "embedded"
    # (Not var/chain: a directory named like a package shadows it for `python -m` run there.)
    anchor_chain_dir: Path = Field(default_factory=lambda data: data["var_dir"] / "embedded-chain")
    anchor_rpc_url: str | None = None
    anchor_rpc_timeout_s: float = Field(default=10.0, gt=0)
    anchor_contract: str | None = None
    # The signing key for rpc: a file (first line, hex), else this environment variable.
    anchor_key_file: Path | None = None
    anchor_key_env: str = "MODERATION_ANCHOR_PRIVATE_KEY"
    anchor_gas_limit: int = Field(default=100_000, ge=21_000)
    # Unset: follow the node (twice the base fee plus its suggested tip).
    anchor_max_fee_gwei: float | None = Field(default=None, gt=0)
    anchor_priority_fee_gwei: float | None = Field(default=None, ge=0)
    # Failed sends are retried after 2, 4, 8 ... seconds, at most this long apart.
    anchor_max_backoff_s: float = Field(default=300.0, gt=0)

    # --- copyright (works, claims, strikes; moderation/claims.py) ---
    # A claim the service cannot verify by itself is reviewed within this many hours.
    claim_review_hours: float = Field(default=24.0, gt=0)
    # DMCA 512(g): a countered item comes back after 10 to 14 business days unless the
    # claimant reports a court action; this is the wait, in business days.
    counter_notice_restore_business_days: int = Field(default=10, ge=10, le=14)
    # Verification: the largest PDQ distance (of 256 bits) that counts as a strong match.
    claim_strong_pdq_distance: int = Field(default=31, ge=0, le=128)
    claim_strong_simhash_distance: int = Field(default=3, ge=0, le=64)
    # Repeat infringers: strikes last this long; this many live strikes suspend uploads.
    strike_expiry_days: int = Field(default=90, ge=1)
    strikes_to_suspend: int = Field(default=3, ge=1)
    # Retroactive scans read stored item hashes in batches of this many rows.
    retro_scan_batch: int = Field(default=5000, ge=100)

    # --- human review (moderation/review_queue.py, the console) ---
    review: ReviewSettings = Field(default_factory=lambda: ReviewSettings())

    # --- faults (issue #9 part 1: moderation/fail_mode.py, moderation/dead_letters.py) ---
    # The answer when the database cannot be written: fail_closed says "review" and holds the
    # item for review; fail_open says "allow" and re-checks it once the database is back.
    db_fail_mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    # Held items wait in Redis; this periodic task (beat) stores them once the database is back.
    db_spool_drain_interval_s: float = Field(default=5.0, gt=0)
    # While the database is down the API still admits keys that authenticated within this
    # many seconds (moderation/known_keys.py); 0 admits none.
    auth_outage_grace_s: float = Field(default=900.0, ge=0)
    # A moderate task delivered more often than this (worker crashes, kills, retries) is
    # dead-lettered instead of run again.
    task_max_deliveries: int = Field(default=5, ge=1, le=100)
    # FOR TESTS ONLY: "crash_on:<content_id prefix>" makes the worker process exit hard on
    # matching items (a poison message), "raise_on:<prefix>" makes the task raise; comma-
    # separated (moderation/fault_injection.py). Never set it in production.
    fault_injection: str | None = None

    log_level: str = "INFO"

    # --- operations: logs, worker metrics, readiness (moderation/logs.py, readiness.py) ---
    # Log lines of `serve` and `worker`: one JSON object per line (json), or human text.
    # Interactive commands keep plain text either way.
    log_format: Literal["json", "text"] = "json"
    # Each `moderation worker` serves Prometheus metrics (all its pool processes together)
    # on this port when set; unset: no endpoint.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_metrics_address: str = "127.0.0.1"
    # Workers announce themselves (models loaded or not) in Redis this often; an
    # announcement lives three times as long, so /readyz forgets a dead worker after that.
    worker_heartbeat_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("index_snapshot_dir", mode="before")
    @classmethod
    def _empty_disables(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _rpc_needs_a_node_and_a_contract(self) -> Settings:
        if self.anchor_backend == "rpc" and not (self.anchor_rpc_url and self.anchor_contract):
            raise ValueError("anchor_backend is rpc: set anchor_rpc_url and anchor_contract")
        return self

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Settings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("webhook_url is set but webhook_secret is not: events are signed")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'moderation.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
