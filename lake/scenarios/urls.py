"""``urls``: a generated stream of URL visits with malicious campaigns (no downloads).

The malicious-URL setting of the StreamMLOps paper: benign traffic to a long,
growing tail of sites, and malicious *campaigns* that appear, rotate their
tokens and fade, so the vocabulary grows without bound and the concept drifts.

Benign URLs: ``scheme://sub.site.tld/section/slug?key=value``. Sites are
pronounceable names (one token each) drawn from a Zipf head plus a stream of
sites never seen before; article slugs come from a pool that grows with the
stream; a third of the URLs carry a query (search words, small ids, tracking
tags, or a session id that is new every time).

Malicious URLs belong to a campaign. A campaign starts at a seeded position,
peaks and fades linearly over its span, and every ``rotate_every`` of its own
events it *rotates*: a fresh host token (``lure-<token>.tld``) and path token,
on cheap TLDs mostly. One campaign in four is *compromised-site* style: it
plants its kit path (``wp-content/<token>/signin``) on benign hosts. Kits
stamp a per-victim id into the path (a new token each time). Benign traffic
also uses cheap TLDs and lure words now and then, so no single token decides.

Benign traffic has look-alikes: brand sites' own login pages (``paypal.com/signin``),
lure words in paths, cheap TLDs, plain http.

Labels (1 = malicious) arrive later: blacklists confirm a malicious URL after 5
minutes to 3 hours; a benign one is cleared after 30 minutes to 12 hours; 2% of
malicious URLs are never confirmed and cleared as benign (label noise).

Distinct tokens grow roughly linearly with ``n``: ~0.5 per event (1M+ at 2M
events, millions at tens of millions). ``drifts`` holds the first event of each
campaign (``scenario_drifts``). Generation is vectorised (numpy + polars
strings), seeded and reproducible: a million events in a few seconds.

>>> f = urls(n=2_000, seed=3)
>>> f.events.columns
['event_id', 'event_time', 'key', 'url']
>>> 0.05 < f.labels["label"].mean() < 0.4
True
>>> urls(n=2_000, seed=3).events.equals(f.events)
True
>>> f.drifts.columns[:2]
['scenario', 'position']
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa

from lake.scenarios.frames import ScenarioFrames
from lake.schemas import SCENARIO_DRIFTS

NAME = "urls"
START = datetime(2026, 3, 1, tzinfo=UTC)
BENIGN_TLDS = ("com", "org", "net", "io", "de", "co.uk", "fr", "edu")
BAD_TLDS = ("xyz", "top", "info", "ru", "tk", "click", "biz")
SUBDOMAINS = ("www", "m", "blog", "shop", "news", "docs", "cdn", "api", "app", "mail")
SECTIONS = ("index", "home", "about", "products", "item", "view", "page", "article", "post", "download",
            "search", "video", "wiki", "forum", "user", "cart", "help", "support", "photo", "music")
QUERY_KEYS = ("q", "id", "ref", "utm_source", "session", "page", "lang", "sid")
SEARCH_WORDS = ("weather", "news", "recipe", "football", "python", "shoes", "flights", "hotel", "music",
                "movie", "translate", "maps", "jobs", "cars", "phone", "laptop", "garden", "health")
UTM = ("newsletter", "twitter", "facebook", "google", "partner", "email", "rss")
LURES = ("login", "account", "secure", "update", "verify", "bank", "pay", "mail", "wallet", "support")
KIT_PATHS = ("signin", "reset", "confirm", "invoice", "track", "billing", "wallet", "gift", "prize", "bonus",
             "unlock", "recover", "validate", "payment")
BRANDS = ("paypal", "apple", "microsoft", "amazon", "netflix", "dhl", "office365", "chase", "wellsfargo",
          "instagram", "steam", "coinbase")
_SYLLABLES = ("ba", "ko", "mi", "ru", "te", "lo", "za", "ne", "vi", "do", "ka", "pe", "su", "li", "mo",
              "ta", "ri", "ge", "fu", "no", "sa", "bo", "de", "hi", "ja", "ku", "ma", "po", "ve", "wi",
              "xo", "yu")


def _pick(rng: np.random.Generator, n: int, size: int, *, zipf: float | None = None) -> np.ndarray:
    """``size`` indices into ``range(n)``: uniform, or Zipf-weighted by rank."""
    if zipf is None:
        return rng.integers(0, n, size)
    w = np.arange(1, n + 1, dtype=float) ** -zipf
    return rng.choice(n, size=size, p=w / w.sum())


def _words(words: tuple[str, ...], idx: np.ndarray) -> pl.Series:
    return pl.Series(words, dtype=pl.String).gather(idx)


def _site_names(site: np.ndarray) -> pl.Series:
    """A pronounceable one-token name per site id (``kobamiru``), distinct ids → distinct names."""
    s = len(_SYLLABLES)
    mixed = (site * 747_211 + 12_345) % s**4  # odd multiplier mod 2**20: a bijection that scatters ids
    parts = [_words(_SYLLABLES, (mixed // s**i) % s) for i in range(4)]
    # A trailing number for ids past 32**4 keeps names distinct at any size.
    tail = pl.Series(np.where(site >= s**4, site // s**4, -1)).cast(pl.String).str.replace("-1", "", literal=True)
    return pl.select(pl.concat_str([*parts, tail])).to_series()


def _ids(values: np.ndarray) -> pl.Series:
    return pl.Series(values).cast(pl.String)


def urls(*, n: int = 200_000, seed: int = 42, rate: float = 2.0, campaigns: int | None = None,
         rotate_every: int = 500) -> ScenarioFrames:
    """``n`` URL visits at ``rate`` per second of event time, with malicious campaigns.

    ``campaigns`` (default: one per 50k events, at least 3) start at seeded
    positions, last a seeded span, and rotate their host and path tokens every
    ``rotate_every`` of their own events.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0 events per second, got {rate!r}")
    if rotate_every < 1:
        raise ValueError(f"rotate_every must be >= 1, got {rotate_every!r}")
    if campaigns is not None and campaigns < 0:
        raise ValueError(f"campaigns must be >= 0, got {campaigns!r}")
    rng = np.random.default_rng(seed)
    k = campaigns if campaigns is not None else max(3, n // 50_000)
    pos = np.arange(n, dtype=np.int64)
    step = 1_000_000 / rate
    t_us = np.sort((pos * step).astype(np.int64) + rng.integers(0, int(step) + 1, n))

    # Campaigns: [start, end) spans, each with an intensity that fades linearly from its peak.
    starts = np.sort(rng.integers(0, max(1, n - n // 10), k))
    # Spans in events (hours to days of traffic), not in shares of the stream: a longer
    # stream has more campaigns, not longer ones.
    spans = rng.integers(max(1, min(n // 10, 10_000)), max(2, min(n // 3, 100_000)), k)
    peak = rng.uniform(0.2, 0.5, k)
    compromised = rng.random(k) < 0.25
    brand = rng.integers(0, len(BRANDS), k)
    campaign = np.full(n, -1, dtype=np.int64)
    u = rng.random(n)
    for c in range(k):
        lo, hi = int(starts[c]), min(n, int(starts[c] + spans[c]))
        share = peak[c] * (1.0 - (pos[lo:hi] - lo) / max(1, hi - lo))
        hit = (u[lo:hi] < share) & (campaign[lo:hi] == -1)
        campaign[lo:hi][hit] = c
    malicious = campaign >= 0
    rotation = np.zeros(n, dtype=np.int64)
    first = np.full(k, -1, dtype=np.int64)
    for c in range(k):
        idx = np.flatnonzero(campaign == c)
        rotation[idx] = np.arange(idx.size) // rotate_every
        if idx.size:
            first[c] = idx[0]

    # Parts of every URL as columns; one polars select assembles them (no Python strings per event).
    fresh = rng.random(n) < 0.06  # benign: a site never seen before, else one of a Zipf head
    site = np.where(fresh, 50_000 + pos, np.minimum(rng.zipf(1.2, n) - 1, 49_999))
    benign_tld = np.where(rng.random(n) < 0.04, _pick(rng, len(BAD_TLDS), n) + len(BENIGN_TLDS),
                          _pick(rng, len(BENIGN_TLDS), n, zipf=1.2))
    bad_tld = np.where(rng.random(n) < 0.75, _pick(rng, len(BAD_TLDS), n) + len(BENIGN_TLDS), _pick(rng, 3, n))
    camp = np.maximum(campaign, 0)
    if k == 0:  # no campaign: placeholders the benign rows index harmlessly
        compromised, brand = np.zeros(1, bool), np.zeros(1, np.int64)
    qkey = _pick(rng, len(QUERY_KEYS), n)
    parts = pl.DataFrame({
        "m": malicious,
        "comp": malicious & compromised[camp],
        "sub": _words(SUBDOMAINS, _pick(rng, len(SUBDOMAINS), n, zipf=1.3)),
        "site": _site_names(site),
        "tld": _words(BENIGN_TLDS + BAD_TLDS, benign_tld),
        "section": _words(SECTIONS, _pick(rng, len(SECTIONS), n, zipf=1.0)),
        "slug": _ids(rng.integers(0, 20_000 + pos // 2 + 1)),  # article pool grows with the stream
        "lure_page": rng.random(n) < 0.03,  # benign bank/login pages mention lure words too
        "lure": _words(LURES, _pick(rng, len(LURES), n)),
        "has_q": rng.random(n) < 0.35,
        "qkey": qkey,
        "qname": _words(QUERY_KEYS, qkey),
        "search": _words(SEARCH_WORDS, _pick(rng, len(SEARCH_WORDS), n, zipf=1.0)),
        "small_id": _ids(rng.integers(0, 1_000, n)),
        "utm": _words(UTM, _pick(rng, len(UTM), n)),
        "lang": _words(("en", "de", "fr", "es", "it"), _pick(rng, 5, n)),
        "session": _ids(rng.integers(0, 2**40, n)),
        # malicious: a token per campaign and rotation; kits stamp a per-victim id
        "token": _ids((campaign * 1_000_003 + rotation * 7_919 + seed) % 1_000_000_007),
        "path_token": _ids((campaign * 7_777_777 + rotation * 104_729 + seed * 31) % 999_999_937),
        "bad_tld": _words(BENIGN_TLDS + BAD_TLDS, bad_tld),
        "kit": _words(KIT_PATHS, _pick(rng, len(KIT_PATHS), n)),
        "brand": _words(BRANDS, brand[camp]),
        "victim": _ids(rng.integers(0, 2**36, n)),
        "has_email": rng.random(n) < 0.4,
        "email": _ids(rng.integers(0, 2**32, n)),
        "official": ~malicious & (rng.random(n) < 0.03),  # benign brand sites: paypal.com/signin
        "any_brand": _words(BRANDS, _pick(rng, len(BRANDS), n)),
        "http": np.where(malicious, rng.random(n) < 0.6, rng.random(n) < 0.1),
    })
    c = pl.col
    benign_host = pl.when(c("official")).then(pl.concat_str([c("sub"), c("any_brand"), pl.lit("com")], separator="."))\
        .otherwise(pl.concat_str([c("sub"), c("site"), c("tld")], separator="."))
    own_host = pl.concat_str([c("lure"), pl.lit("-x"), c("token"), pl.lit("."), c("bad_tld")])
    host = pl.when(c("m") & ~c("comp")).then(own_host).otherwise(benign_host)
    qvalue = (pl.when(c("qkey") == 0).then(c("search"))
              .when(c("qkey").is_in([1, 5])).then(c("small_id"))
              .when(c("qkey") == 3).then(c("utm"))
              .when(c("qkey") == 6).then(c("lang"))
              .otherwise(pl.lit("s") + c("session")))
    benign_path = pl.concat_str([pl.when(c("official")).then(c("kit")).when(c("lure_page")).then(c("lure"))
                                 .otherwise(c("section")),
                                 pl.lit("/a"), c("slug"),
                                 pl.when(c("has_q")).then(pl.concat_str([pl.lit("?"), c("qname"),
                                                                          pl.lit("="), qvalue]))
                                 .otherwise(pl.lit(""))])
    bad_path = pl.concat_str([
        pl.when(c("comp")).then(pl.concat_str([pl.lit("wp-content/k"), c("path_token"), pl.lit("/"), c("kit")]))
        .otherwise(pl.concat_str([c("brand"), pl.lit("/"), c("kit"), pl.lit("/k"), c("path_token")])),
        pl.lit("/v"), c("victim"),
        pl.when(c("has_email")).then(pl.lit("?email=u") + c("email")).otherwise(pl.lit("")),
    ])
    built = parts.select(
        host=host,
        url=pl.concat_str([pl.when(c("http")).then(pl.lit("http")).otherwise(pl.lit("https")), pl.lit("://"), host,
                           pl.lit("/"), pl.when(c("m")).then(bad_path).otherwise(benign_path)]),
    )
    del parts

    # Blacklists miss some: 2% of malicious URLs are never confirmed and get cleared as benign.
    label = malicious & (rng.random(n) >= 0.02)
    delay_s = np.where(label, rng.uniform(300, 3 * 3600, n), rng.uniform(1800, 12 * 3600, n))
    start_us = int(START.timestamp() * 1_000_000)
    event_time = pl.Series("event_time", t_us + start_us).cast(pl.Datetime("us", "UTC"))
    ids = "u" + pl.Series("event_id", pos).cast(pl.String).str.zfill(9)
    events = pl.DataFrame({"event_id": ids, "event_time": event_time, "key": built["host"], "url": built["url"]})
    labels = pl.DataFrame({
        "event_id": ids, "label": label.astype(np.int64),
        "label_time": event_time + pl.Series((delay_s * 1_000_000).astype(np.int64)).cast(pl.Duration("us")),
    })
    rows = [
        {"scenario": NAME, "position": int(p), "event_id": ids[int(p)], "event_time": event_time[int(p)],
         "description": f"campaign {c} appears ({'compromised sites' if compromised[c] else BRANDS[brand[c]]}, "
                        f"span {int(spans[c]):,} events, peak share {peak[c]:.2f})"}
        for c, p in sorted(enumerate(first), key=lambda cp: cp[1]) if p >= 0
    ]
    drifts = pl.from_arrow(pa.Table.from_pylist(rows, schema=SCENARIO_DRIFTS))
    return ScenarioFrames(events, labels, drifts)
