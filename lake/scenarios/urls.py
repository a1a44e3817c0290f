"""``urls``: a generated stream of URL visits with malicious campaigns (no downloads).

The malicious-URL setting: benign traffic to a long tail of sites, and
malicious *campaigns* that appear, rotate their tokens and fade. Every campaign
mints new hosts and path tokens as it rotates, and the benign tail keeps adding
new sites, so the vocabulary grows without bound and the concept drifts. The
label (1 = malicious) arrives later: blacklists confirm a malicious URL after 5
minutes to 3 hours, a benign one is cleared after 30 minutes to 12 hours.

Events carry ``url`` (the only feature: no column per token) and ``key`` = the
host. Generation is vectorised (numpy), seeded and reproducible; a million events
take seconds.

>>> f = urls(n=2_000, seed=3)
>>> f.events.columns
['event_id', 'event_time', 'key', 'url']
>>> 0.05 < f.labels["label"].mean() < 0.4
True
>>> urls(n=2_000, seed=3).events.equals(f.events)
True
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from lake.scenarios.frames import ScenarioFrames

START = datetime(2026, 3, 1, tzinfo=UTC)
BENIGN_TLDS = ("com", "org", "net", "io", "de", "co.uk", "fr", "edu")
BAD_TLDS = ("xyz", "top", "info", "ru", "tk", "click", "biz")
WORDS = ("login", "account", "secure", "update", "verify", "bank", "pay", "mail", "shop", "news", "blog",
         "docs", "cdn", "static", "img", "api", "search", "video", "wiki", "forum", "user", "cart", "help",
         "support", "app", "drive", "cloud", "photo", "music", "game", "sport", "travel", "food", "health")
PATH_WORDS = ("index", "home", "about", "products", "item", "view", "page", "article", "post", "download",
              "signin", "reset", "confirm", "invoice", "track", "billing", "wallet", "gift", "prize", "bonus")


def _choice(rng: np.random.Generator, words: tuple[str, ...], size: int, *, zipf: float | None = None) -> np.ndarray:
    arr = np.array(words, dtype=object)
    if zipf is None:
        return arr[rng.integers(0, len(words), size)]
    ranks = np.arange(1, len(words) + 1, dtype=float) ** -zipf
    return arr[rng.choice(len(words), size=size, p=ranks / ranks.sum())]


def urls(*, n: int = 200_000, seed: int = 42, rate: float = 2.0, campaigns: int | None = None,
         rotate_every: int = 500) -> ScenarioFrames:
    """``n`` URL visits at ``rate`` per second of event time, with malicious campaigns.

    ``campaigns`` (default: one per 20k events, at least 3) start at seeded
    positions, last a seeded span, and rotate their host and path tokens every
    ``rotate_every`` of their own events.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0 events per second, got {rate!r}")
    if rotate_every < 1:
        raise ValueError(f"rotate_every must be >= 1, got {rotate_every!r}")
    rng = np.random.default_rng(seed)
    k = campaigns if campaigns is not None else max(3, n // 20_000)
    pos = np.arange(n)
    t_us = (pos * (1_000_000 / rate)).astype(np.int64) + rng.integers(0, int(1_000_000 / rate) + 1, n)
    t_us = np.sort(t_us)

    # Campaigns: [start, end) spans over the stream, each with an intensity that fades linearly.
    starts = np.sort(rng.integers(0, max(1, n - n // 10), k))
    spans = rng.integers(max(1, n // 20), max(2, n // 4), k)
    peak = rng.uniform(0.15, 0.45, k)
    campaign = np.full(n, -1)
    u = rng.random(n)
    for c in range(k):
        lo, hi = starts[c], min(n, starts[c] + spans[c])
        share = peak[c] * (1.0 - (pos[lo:hi] - lo) / max(1, hi - lo))
        hit = (u[lo:hi] < share) & (campaign[lo:hi] == -1)
        campaign[lo:hi][hit] = c
    malicious = campaign >= 0

    # Benign: a long Zipf tail of sites that keeps growing with the stream.
    site_pool = 2_000 + pos // 20
    site = np.minimum((rng.zipf(1.3, n) - 1), site_pool - 1)
    benign_tld = np.where(rng.random(n) < 0.05, _choice(rng, BAD_TLDS, n), _choice(rng, BENIGN_TLDS, n, zipf=1.2))
    benign_host = (_choice(rng, WORDS, n, zipf=1.0) + np.char.mod("%d", site).astype(object) + "." + benign_tld)
    benign_path = (_choice(rng, PATH_WORDS[:10], n, zipf=1.1) + "/"
                   + np.char.mod("%d", rng.integers(0, 5_000, n)).astype(object))

    # Malicious: per campaign and rotation, fresh hosts and tokens (hex ids), lures from a small set.
    rotation = np.zeros(n, dtype=np.int64)
    for c in range(k):
        idx = np.flatnonzero(campaign == c)
        rotation[idx] = np.arange(idx.size) // rotate_every
    token = np.char.mod("%x", (campaign * 1_000_003 + rotation * 7_919 + seed) % 16_777_213 + 4_096).astype(object)
    # Campaigns mostly use cheap TLDs but not only; a few benign sites live on them too.
    bad_tld = np.where(rng.random(n) < 0.7, _choice(rng, BAD_TLDS, n), _choice(rng, BENIGN_TLDS[:3], n))
    bad_host = (_choice(rng, WORDS[:6], n) + "-" + token + "." + bad_tld)
    bad_path = (_choice(rng, PATH_WORDS[10:], n) + "/" + token
                + np.char.mod("%d", rng.integers(0, 50, n)).astype(object))
    host = np.where(malicious, bad_host, benign_host)
    path = np.where(malicious, bad_path, benign_path)
    scheme = np.where(malicious & (rng.random(n) < 0.6), "http://", "https://")
    query = np.where(rng.random(n) < 0.3, "?" + _choice(rng, ("id", "q", "ref", "session", "utm"), n)
                     + "=" + np.char.mod("%d", rng.integers(0, 1_000, n)).astype(object), "")
    url = scheme.astype(object) + host + "/" + path + query

    delay_s = np.where(malicious, rng.uniform(300, 3 * 3600, n), rng.uniform(1800, 12 * 3600, n))
    start_us = int(START.timestamp() * 1_000_000)
    event_time = pl.Series("event_time", t_us + start_us).cast(pl.Datetime("us", "UTC"))
    ids = "u" + pl.Series("event_id", pos).cast(pl.String).str.zfill(9)
    events = pl.DataFrame({
        "event_id": ids, "event_time": event_time, "key": pl.Series(host.astype(str)),
        "url": pl.Series(url.astype(str)),
    })
    labels = pl.DataFrame({
        "event_id": ids, "label": malicious.astype(np.int64),
        "label_time": event_time + pl.Series((delay_s * 1_000_000).astype(np.int64)).cast(pl.Duration("us")),
    })
    return ScenarioFrames(events, labels)
