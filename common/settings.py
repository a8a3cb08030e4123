"""The one place that reads the environment: every setting has the ``CE_`` prefix."""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import SettingsError
from common.redis_conn import cluster_node_url

LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "::1")
_HOST_NAME = re.compile(r"[A-Za-z0-9.\-]{1,253}|[0-9A-Fa-f:]{2,39}")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
ADAPTERS = ("simulated", "http")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
NO_REDIS_URL = "CE_REDIS_URL: not set; point it at the fleet's Redis, or start the engine with `campaign-engine up`"


class Settings(BaseSettings):
    """Engine settings; ``CE_REDIS_URL`` etc. Unknown ``CE_`` variables are ignored, bad values refused."""

    model_config = SettingsConfigDict(env_prefix="CE_", extra="ignore", validate_default=True)

    redis_url: str | None = Field(
        default=None,
        description=(
            "State store: one server (redis://host:port/db) or a Redis Cluster (redis+cluster://host:port, "
            "rediss+cluster:// with TLS; any node). When unset, `campaign-engine up` starts a private Redis "
            "under run_dir."
        ),
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker; defaults to redis_url, and is required when that names a Redis Cluster.",
    )
    tick_seconds: float = Field(default=2.0, gt=0.05, le=3600, description="Wall-clock length of a tick.")
    forecast_window: int = Field(default=30, ge=3, le=1_000, description="Ticks in the regression window.")
    season_ticks: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description=(
            "Ticks in one cycle of the market's volume (a day), overriding what the engine learns from the feed; "
            "unset: learnt, 0: none."
        ),
    )
    cycle_refit_ticks: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Ticks between refits of the volume cycle; unset: 8, or a 48th of a set season (at least 1).",
    )
    campaigns_per_task: int = Field(default=1, ge=1, le=10_000, description="Campaigns per evaluate task.")
    reservation_grace_ticks: int = Field(
        default=3,
        ge=1,
        le=10_000,
        description=(
            "Ticks after its deadline before the sweeper closes a reservation: released if never submitted, "
            "charged at its full grant if it was."
        ),
    )
    platform_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How long an evaluation waits for one platform's submit; past it, the bids' fate is unknown "
        "and their reservations are left to the sweeper.",
    )
    breaker_failures: int = Field(
        default=3, ge=1, le=1_000, description="Failing ticks in a row that open a platform's circuit breaker."
    )
    breaker_cooldown_ticks: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Ticks an open breaker skips its platform before a tick tries it again (half-open).",
    )
    feed: Literal["simulated", "external"] = Field(
        default="external",
        description=(
            "Where the platforms' figures come from: external, only what is posted to POST /feed (or "
            "`campaign-engine feed post`); simulated, the simulated market's own (`campaign-engine up`'s demo)."
        ),
    )
    feed_stale_ticks: int = Field(
        default=2,
        ge=1,
        le=100_000,
        description="Ticks a platform's newest figures may lag the tick under way before its feed counts as stale.",
    )
    platform_adapter: str = Field(
        default="simulated",
        description=(
            "How bids reach the platforms: simulated (the market model; with an external feed, paper trading "
            "on the posted figures), http (JSON to each platform's registered endpoint), or module:callable, a "
            "factory of your own adapter (docs/operations.md)."
        ),
    )
    platform_faults: dict[str, Literal["raise", "refuse", "hang"]] = Field(
        default_factory=dict,
        description='Faults injected into the simulated platforms, for fault drills: JSON such as {"search": "hang"}.',
    )
    decisions_maxlen: int = Field(
        default=80_000,
        ge=1_000,
        description="Approximate cap of ce:decisions, in entries: one per campaign and tick that bid, holding "
        "its bids (about 2.5), so 80,000 keep about 200,000 bids.",
    )
    decisions_nats_url: str | None = Field(
        default=None,
        description=(
            "NATS server (nats://host:port) to publish every campaign's outcome of every tick to, on the "
            "JetStream stream CE_DECISIONS (subjects ce.decisions.<campaign>); unset: not published."
        ),
    )
    decisions_nats_max_age: float = Field(
        default=86_400.0,
        ge=60.0,
        description="Seconds the CE_DECISIONS stream keeps a message (applied when the stream is created).",
    )
    decisions_nats_max_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="Bytes the CE_DECISIONS stream holds before dropping its oldest messages (applied when created).",
    )
    decisions_nats_buffer: int = Field(
        default=20_000,
        ge=1,
        le=10_000_000,
        description="Outcomes each worker process holds while NATS is slow or down; more are dropped and counted.",
    )
    decisions_retention_ticks: int = Field(
        default=240,
        ge=1,
        le=100_000,
        description="Ticks of decisions ce:decisions keeps: each tick trims it to the due campaigns times this "
        "(one entry per campaign and tick that bid), never above decisions_maxlen.",
    )
    tick_stats_retention_ticks: int = Field(
        default=1_000,
        ge=100,
        le=1_000_000,
        description="Ticks of summaries ce:tick:stats keeps (one entry per tick, about 100 bytes): what the "
        "dashboard's /api/ticks can ask for; up, the bench and the metrics read only the newest.",
    )
    ledger_detail_ticks: int = Field(
        default=120,
        ge=8,
        le=1_000_000,
        description="Ticks of each campaign's ledger kept in detail (reservation records, stream entries); older "
        "ones are compacted into per-campaign totals and refused from then on. Must exceed the reservation grace.",
    )
    archive_after_ticks: int = Field(
        default=43_200,
        ge=0,
        le=10_000_000,
        description="Ticks a finished campaign stays in full before it is archived (a compact record in "
        "ce:archive with its final balances) and its keys removed.",
    )
    archive_maxlen: int = Field(
        default=100_000, ge=100, description="Approximate cap of ce:archive, in archived campaigns."
    )
    aggressiveness: float = Field(default=1.0, ge=0.0, le=3.0, description="Trades value against waste.")
    flower_user: str = Field(default="admin", min_length=1)
    flower_password: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(12)))
    flower_port: int = Field(default=5555, ge=1, le=65535)
    api_token: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(24)))
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    run_dir: Path = Field(default=Path(".run"), description="Where the embedded Redis keeps its files.")
    scenario: Path | None = Field(
        default=None, description="Scenario file that drives the simulated platforms; generated when unset."
    )
    market_seed: int = Field(default=7, description="Seed of the generated simulated market.")
    api_reads: Literal["loopback", "open", "token"] = Field(
        default="loopback",
        description="Who may read the HTTP API without the token: loopback clients, everyone, or nobody.",
    )
    api_allowed_hosts: str = Field(
        default="",
        description=(
            "Comma-separated host names that token-less loopback reads may carry in their Host header, besides "
            "localhost, 127.0.0.1, ::1 and api_host (a guard against DNS rebinding)."
        ),
    )
    api_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=1_073_741_824, description="Largest request body the API reads (else 413)."
    )
    api_max_streams: int = Field(
        default=32, ge=1, le=10_000, description="Event streams (/decisions/stream) open at once (else 503)."
    )
    platform_charge_log: Path | None = Field(
        default=None,
        description=(
            "For tests: a directory where the simulated platforms append what they charged, one file per "
            "process (common/market/charges.py); unset: nothing is written."
        ),
    )
    platform_reply_ms: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description=(
            "For tests, with platform_charge_log: how long the simulated platforms take to answer after they "
            "charged, as a real platform's reply takes its time over the network."
        ),
    )
    metrics_per_campaign: bool = Field(
        default=False, description="Also export per-campaign series on /metrics (one label value per campaign)."
    )

    @field_validator("redis_url", "broker_url", "scenario", "platform_charge_log", "decisions_nats_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("decisions_nats_url")
    @classmethod
    def _nats_servers(cls, value: str | None) -> str | None:
        # A comma-separated list names several servers of one cluster, as NATS clients take it.
        if value is None:
            return None
        for server in value.split(","):
            scheme, sep, rest = server.strip().partition("://")
            if not sep or scheme not in NATS_SCHEMES or not rest.strip("/"):
                raise ValueError(f"want nats://host:port (or {', '.join(NATS_SCHEMES)}), got {server.strip()!r}")
        return value

    @field_validator("platform_adapter")
    @classmethod
    def _adapter_named(cls, value: str) -> str:
        # Only the form is checked here; the module is imported when the fleet starts (common/fleet/adapters.py).
        value = value.strip()
        if value in ADAPTERS:
            return value
        module, sep, name = value.partition(":")
        if not sep or not _DOTTED.fullmatch(module) or not name.isidentifier():
            raise ValueError(f"want {', '.join(ADAPTERS)} or module:callable, got {value!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_beside_a_cluster(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Celery's Redis transport speaks to one server: a cluster state store needs a broker of its own.
        state = info.data.get("redis_url")
        if value is None and state is not None and cluster_node_url(state) is not None:
            raise ValueError("required when CE_REDIS_URL names a Redis Cluster; point it at a plain Redis server")
        return value

    @field_validator("ledger_detail_ticks")
    @classmethod
    def _detail_past_the_grace(cls, value: int, info: ValidationInfo) -> int:
        # A settle may come until the sweeper's cut-off: compacting before it would refuse it.
        grace = info.data.get("reservation_grace_ticks", 0)
        if value <= grace + 2:
            raise ValueError(f"must exceed CE_RESERVATION_GRACE_TICKS + 2 ({grace + 2})")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_allowed_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        for name in value.split(","):
            name = name.strip()
            if name and not _HOST_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name (give names without scheme, port or path)")
        return value

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Host names (lower case, no port) that token-less loopback reads may name."""
        named = {name.strip().lower() for name in self.api_allowed_hosts.split(",") if name.strip()}
        return frozenset({*LOCAL_HOST_NAMES, self.api_host.strip("[]").lower(), *named})

    @property
    def broker(self) -> str:
        url = self.broker_url or self.redis_url
        if url is None:
            raise SettingsError(NO_REDIS_URL)
        return url

    @property
    def nats_servers(self) -> list[str]:
        """The servers of ``decisions_nats_url``; empty when outcomes are not published."""
        return [s.strip() for s in (self.decisions_nats_url or "").split(",") if s.strip()]

    @property
    def state_url(self) -> str:
        if self.redis_url is None:
            raise SettingsError(NO_REDIS_URL)
        return self.redis_url


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a ``SettingsError`` naming its variable and why."""
    try:
        return Settings()
    except ValidationError as exc:
        prefix = Settings.model_config.get("env_prefix", "")
        problems = [f"{prefix}{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()
