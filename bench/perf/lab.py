"""One scale's bench: its history on disk, a moto S3 server holding it, a local Slack server.

Both servers run in their own processes on 127.0.0.1 and live as long as the lab; the bucket
is filled on first need, with the CSVs or only the SUCCESS markers (what the analysis from a
warm cache lists: it downloads nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.perf.common import (
    AWS_ENV,
    SLACK_CHANNEL,
    SLACK_TOKEN,
    ServerProcess,
    log,
)
from bench.perf.history import (
    BUCKET,
    PREFIX,
    Scale,
    count_files,
    generate,
    runs_of,
    seed_bucket,
    store_url,
)
from bench.testing.s3server import Request, remote_requests

#: Variables of the caller's environment that must not leak into a measured process.
_SCRUBBED = ("BENCH_", "SLACK_", "AWS_")
_SCRUBBED_NAMES = {"FIRST_DIR", "REF_DIR"}


@dataclass
class Lab:
    scale: Scale
    workdir: Path
    rounds: int
    old_rounds: int
    root: Path = field(init=False)
    _s3: ServerProcess | None = field(default=None, init=False)
    _slack: ServerProcess | None = field(default=None, init=False)
    _seeded: str = field(default="", init=False)  # "", "success", "full"

    def __post_init__(self) -> None:
        self.root = generate(self.scale, self.workdir)

    @property
    def top(self) -> Path:
        return self.workdir / self.scale.name

    @property
    def runs(self) -> list[str]:
        return runs_of(self.root)

    def files(self) -> int:
        return count_files(self.root)

    # --- servers ----------

    @property
    def endpoint(self) -> str:
        if self._s3 is None:
            self._s3 = ServerProcess("bench.testing.s3server", env={**os.environ, **AWS_ENV})
            log(f"moto S3 server (own process): {self._s3.url}")
        return self._s3.url

    @property
    def slack_url(self) -> str:
        if self._slack is None:
            self._slack = ServerProcess(
                "bench.testing.slackserver", env={**os.environ, "SLACK_BOT_TOKEN": SLACK_TOKEN}
            )
            log(f"local Slack Web API server (own process): {self._slack.url}")
        return self._slack.url

    def seed(self, *, full: bool) -> None:
        """The bucket holds the history: every CSV (``full``) or at least every SUCCESS."""
        if self._seeded == "full" or (self._seeded == "success" and not full):
            return
        seed_bucket(self.endpoint, self.root, csvs=full)
        self._seeded = "full" if full else "success"

    def requests(self, since: int = 0) -> tuple[int, list[Request]]:
        return remote_requests(self.endpoint, since=since)

    def close(self) -> None:
        for server in (self._s3, self._slack):
            if server is not None:
                server.stop()
        self._s3 = self._slack = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- environments ----------

    def base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_SCRUBBED) and k not in _SCRUBBED_NAMES
        }
        env.update(AWS_ENV)
        return env

    def watcher_env(self, watch_root: Path) -> dict[str, str]:
        """``watch_regressions``'s environment: the bucket, the local Slack, ``watch_root``."""
        return {
            **self.base_env(),
            "BENCH_STORE_URL": store_url(),
            "BENCH_STORE_ENDPOINT_URL": self.endpoint,
            "BENCH_WATCH_ROOT": str(watch_root),
            "BENCH_REFERENCE_ROOT": str(watch_root.parent),
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_API_URL": self.slack_url,
            "BENCH_SLACK_CHANNEL": SLACK_CHANNEL,
        }

    def s3_uri(self, key: str = "") -> str:
        return f"s3://{BUCKET}/{PREFIX}/{key}"
