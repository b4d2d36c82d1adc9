"""Test articles and page builders. All texts are written for these tests."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from dedup.models import FetchedPage

SEED_DISCLAIMER = (
    "Disclaimer: The copyright of this article belongs to the original author. Reposting this article is solely for "
    "the purpose of information dissemination and does not constitute any investment advice. If there is any "
    "infringement, please contact us immediately. We will make corrections or deletions as necessary. Thank you."
)
ZH_DISCLAIMER = "免责声明：本文版权归原作者所有，转载仅为传递更多信息，不构成任何投资建议。如有侵权，请联系我们删除。"

CANAL_STORY = [
    "The city will drain the old canal basin in September for the first time in forty years, so that engineers can inspect the lock gates and the brick walls that hold back the water.",
    "Boat owners who moor in the basin have been asked to move their vessels to the river harbor by the end of August, where the council has reserved forty temporary berths for them.",
    "The inspection is expected to take six weeks. Engineers will also remove the silt that has built up since the last dredging, which the council estimates at twelve thousand cubic meters.",
    "Residents have asked whether the fish in the basin will be rescued. The council said a team from the angling club will move them to the river before the water level drops below one meter.",
    "If the walls need repair, the basin may stay empty through the winter, and the Christmas market that usually opens on the quay would move to the square in front of the town hall.",
]

BAKERY_STORY = [
    "A bakery on Mill Lane has started selling bread made from grain grown on the allotments behind the station, after a group of gardeners planted wheat on three unused plots last spring.",
    "The harvest filled only forty sacks, enough for two loaves a day for most of the year, and the bakery sells them on Saturday mornings until they run out, usually before nine.",
    "The gardeners threshed the grain by hand at the community hall and say they want to try rye next year, if the council agrees to lease them two more plots along the railway embankment.",
]

MARKET_STORY = [
    "The weekly farmers market will move from the car park to the riverside promenade in June, the market association announced, after traders complained about the heat on the asphalt.",
    "The promenade has room for sixty stalls, twenty more than the car park, and the association hopes to bring back the cheese makers who left last year because there was no shade.",
    "Traffic on the river road will be closed on market mornings between six and two, and the number eleven bus will be diverted along Church Street during those hours.",
]


def article_html(
    title: str,
    paragraphs: list[str],
    tail: list[str] = (),
    *,
    canonical: str | None = None,
    og_url: str | None = None,
    published: str | None = None,
    site_name: str = "Test Site",
    charset: str | None = "utf-8",
    extra_head: str = "",
) -> str:
    head = f'<meta charset="{charset}">' if charset else ""
    head += f'<title>{html.escape(title)}</title><meta property="og:site_name" content="{site_name}">'
    if canonical:
        head += f'<link rel="canonical" href="{canonical}">'
    if og_url:
        head += f'<meta property="og:url" content="{og_url}">'
    if published:
        head += f'<meta property="article:published_time" content="{published}">'
    body = "".join(f"<p>{html.escape(p)}</p>" for p in list(paragraphs) + list(tail))
    return (
        f"<!DOCTYPE html><html><head>{head}{extra_head}</head><body><header><a href='/'>{site_name}</a></header>"
        f"<main><article><h1>{html.escape(title)}</h1>{body}</article></main><footer>{site_name} footer</footer></body></html>"
    )


def fetched(url: str, text: str, content_type: str = "text/html; charset=utf-8", encoding: str = "utf-8") -> FetchedPage:
    return FetchedPage(
        url=url,
        source="test",
        fetched_at=datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None),
        final_url=url,
        status=200,
        content_type=content_type,
        html=text.encode(encoding),
    )


# Words for generated stories (tests that need many unrelated pages): any two
# generated stories share almost no 5-word shingles.
STORY_WORDS = (
    "harbor council bridge winter market school river bakery station library mayor ferry orchard museum canal tram "
    "volunteers budget festival engineers farmers lantern choir granary quarry meadow cottage chapel pier lighthouse "
    "weather report repair opening closing delay grant petition survey harvest parade exhibit concert lecture shelter "
    "north south east west old new small large early late quiet busy narrow wide green stone wooden iron silver "
    "morning evening monday friday spring autumn summer weekend holiday evening tuesday thursday saturday sunday "
    "said agreed planned opened moved asked voted built painted cleaned counted measured delivered collected gathered"
).split()


def generated_story(seed: int, paragraphs: int = 4, words: int = 40) -> list[str]:
    """A story of random words from STORY_WORDS, the same for the same seed."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(STORY_WORDS) for _ in range(words)).capitalize() + "." for _ in range(paragraphs)]
