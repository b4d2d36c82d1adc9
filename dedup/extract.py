"""Extract stage: text and metadata of a page, with trafilatura.

The page is decoded here (the HTTP charset first, then the page's own meta
charset) and parsed once; the link metadata that trafilatura does not keep
apart (canonical, og:url, a declared original source) is read from the same
tree before trafilatura extracts the text.

The parse is trafilatura's own (`load_html`: the same repairs, parser
options and fallbacks) with one difference: lxml finds the Python class of
each element in C. lxml.html's parser asks a Python function
(`HtmlElementClassLookup`, which gives forms and inputs classes of their
own) every time an element is touched, and trafilatura touches each one
many times: 3 to 5% of extraction time on the 811 dev pages. Here every
element is an `HtmlElement`; every field trafilatura extracts from the dev
pages is the same (tests/test_stages.py checks it on pages of ours).
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HtmlProcessingInstruction
from trafilatura import bare_extraction
from trafilatura.utils import is_dubious_html, repair_faulty_html

from dedup.models import Article, FetchedPage


class ExtractionError(Exception):
    """A page that yields no article text; the message says why."""


@dataclass(frozen=True)
class ExtractConfig:
    # trafilatura's `fast` mode skips its fallback extractors (see benchmarks/).
    fast: bool = False
    # Below this many characters of text a page is recorded as "no article".
    min_text_chars: int = 100
    # htmldate's extensive search also reads dates out of the page text. It
    # doubled extraction time on the dev corpus and finds the dates most
    # likely to be wrong (a date in the story, a sidebar); dates are weak
    # evidence of who was first anyway, so only metadata, markup and URL dates
    # are read by default.
    extensive_date_search: bool = False


# Legacy Chinese encodings are subsets of GB18030; decoding with the superset
# keeps characters that a mislabelled page uses beyond its declared set.
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252", "latin-1": "cp1252"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.IGNORECASE)


def _known_charset(name: str | None) -> str | None:
    if not name:
        return None
    name = _CHARSET_ALIASES.get(name.lower(), name.lower())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(page: FetchedPage) -> str:
    """Decode the body with the first charset that fits it: the HTTP charset,
    the meta charset, UTF-8, then cp1252. A charset fits when the bytes it
    cannot decode are a few strays among many characters it does decode (a
    stray byte in a UTF-8 page is replaced, not a reason to drop UTF-8); a
    declared charset that does not fit (a server that says utf-8 and sends
    latin-1, where every accented letter fails) is passed over."""
    body = page.html or b""
    header = _HEADER_CHARSET.search(page.content_type or "")
    meta = _META_CHARSET.search(body[:4096])
    declared = [
        _known_charset(header.group(1) if header else None),
        _known_charset(meta.group(1).decode("ascii", "ignore") if meta else None),
    ]
    decoded = []
    for charset in dict.fromkeys(c for c in [*declared, "utf-8", "cp1252"] if c):
        text = body.decode(charset, errors="replace")
        failed = text.count("\ufffd")
        if failed <= _STRAY_BYTES or failed <= _STRAY_SHARE * sum(1 for ch in text if ch > "\x7f"):
            return text
        decoded.append(text)
    return min(decoded, key=lambda t: t.count("\ufffd"))


_STRAY_BYTES = 2
_STRAY_SHARE = 0.05  # of the non-ASCII characters


def _html_parser() -> lxml.html.HTMLParser:
    """trafilatura's parser options (trafilatura.utils.HTML_PARSER), with the element classes found in C."""
    parser = lxml.html.HTMLParser(
        collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True
    )
    parser.set_element_class_lookup(
        etree.ElementDefaultClassLookup(element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity)
    )
    return parser


_HTML_PARSER = _html_parser()


def parse_html(html: str) -> HtmlElement | None:
    """The page's tree as trafilatura's `load_html` parses a decoded page (its
    repairs, a second try from UTF-8 bytes, None for a page that is not HTML),
    with `_HTML_PARSER`."""
    beginning = html[:50].lower()
    html = repair_faulty_html(html, beginning)
    tree = None
    tried_bytes = False
    try:
        tree = lxml.html.fromstring(html, parser=_HTML_PARSER)
    except ValueError:  # a string with an XML encoding declaration: lxml takes it as bytes only
        tree, tried_bytes = _parse_utf8(html), True
    except etree.LxmlError:
        tree = None
    if (tree is None or len(tree) < 1) and not tried_bytes:
        tree = _parse_utf8(html)
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None
    return tree


def _parse_utf8(html: str) -> HtmlElement | None:
    try:
        return lxml.html.fromstring(html.encode("utf8", "surrogatepass"), parser=_HTML_PARSER)
    except (ValueError, etree.LxmlError):
        return None


@dataclass
class _LinkMetadata:
    """What the page's link and meta tags and JSON-LD say of where it came from (the first non-empty value of each)."""

    canonical: str | None = None
    og_url: str | None = None
    original_source: str | None = None
    html_lang: str | None = None
    content_language: str | None = None
    json_ld: list[str] = field(default_factory=list)


def _link_metadata(tree: HtmlElement) -> _LinkMetadata:
    """The root's lang, and the link and meta tags and JSON-LD scripts of the
    whole document, read in one walk over its elements (five XPath searches
    of the whole tree cost three times as much: 1.7% of extraction)."""
    root = tree.getroottree().getroot()
    found = _LinkMetadata(html_lang=_stripped(root.get("lang")) if root.tag == "html" else None)
    for element in root.iter("link", "meta", "script"):
        if element.tag == "script":
            if element.get("type") == "application/ld+json" and element.text:
                found.json_ld.append(element.text)
        elif element.tag == "link":
            if found.canonical is None and element.get("rel") == "canonical":
                found.canonical = _stripped(element.get("href"))
        else:
            if found.og_url is None and element.get("property") == "og:url":
                found.og_url = _stripped(element.get("content"))
            if found.original_source is None and element.get("name") == "original-source":
                found.original_source = _stripped(element.get("content"))
            if found.content_language is None and element.get("http-equiv") == "content-language":
                found.content_language = _stripped(element.get("content"))
    return found


_TABLE_PARTS = ("table", "thead", "tbody", "tfoot", "tr", "td", "th")
_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol")


def unwrap_layout_tables(tree: HtmlElement) -> None:
    """Turn tables used for page layout into plain blocks, in place.

    A table whose cells hold paragraphs or headings lays out a page, it does
    not hold data; trafilatura reads a table cell as one line, which glues a
    whole article, with what a template puts before and after it, into one
    paragraph. Data tables (cells of plain text) are left alone."""
    layout = [
        table for table in tree.iter("table") if any(next(cell.iter(*_BLOCKS), None) is not None for cell in table.iter("td", "th"))
    ]
    for table in layout:
        for element in table.iter(*_TABLE_PARTS):
            element.tag = "div"
            element.attrib.pop("width", None)


def _stripped(value: str | None) -> str | None:
    return (value or "").strip() or None


def _json_ld_based_on(scripts: list[str]) -> str | None:
    """schema.org `isBasedOn` (or `isBasedOnUrl`) in JSON-LD: the page names its source."""
    for script in scripts:
        if "isBasedOn" not in script:
            continue
        try:
            data = json.loads(script)
        except ValueError:
            continue
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                for key in ("isBasedOn", "isBasedOnUrl"):
                    value = item.get(key)
                    if isinstance(value, str) and value.strip():
                        return value.strip()
                    if isinstance(value, dict) and isinstance(value.get("url") or value.get("@id"), str):
                        return (value.get("url") or value.get("@id")).strip()
                stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
    return None


def _absolute(base: str, href: str | None) -> str | None:
    if not href:
        return None
    absolute = urljoin(base, href) if urlsplit(base).scheme in ("http", "https") else href
    return absolute if urlsplit(absolute).scheme in ("http", "https") else None


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    host = urlsplit(url).hostname
    return host.lower() if host else None


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        return None


def trafilatura_options(config: ExtractConfig) -> dict:
    """The options every extraction passes to trafilatura's `bare_extraction`."""
    return {
        "with_metadata": True,
        "fast": config.fast,
        "include_comments": False,
        "include_tables": True,
        "date_extraction_params": {
            "original_date": True,
            "extensive_search": config.extensive_date_search,
            "outputformat": "%Y-%m-%dT%H:%M:%S",
        },
    }


def extract_article(page: FetchedPage, config: ExtractConfig) -> Article:
    """Extract an article from a fetched page; raises ExtractionError with the reason."""
    if not page.ok:
        raise ExtractionError(page.error or "nothing fetched")
    html = decode_html(page)
    tree = parse_html(html)
    if tree is None:
        raise ExtractionError("not parseable as HTML")
    base = page.final_url or page.url
    found = _link_metadata(tree)
    unwrap_layout_tables(tree)
    canonical = _absolute(base, found.canonical)
    og_url = _absolute(base, found.og_url)
    declared = _absolute(base, found.original_source or _json_ld_based_on(found.json_ld))
    lang = found.html_lang or found.content_language
    url = base if urlsplit(base).scheme in ("http", "https") else (canonical or og_url)
    document = bare_extraction(tree, url=url, **trafilatura_options(config))
    text = (document.text or "").strip() if document is not None else ""
    if len(text) < config.min_text_chars:
        raise ExtractionError(f"no article text (extracted {len(text)} characters)")
    host = host_of(base) or host_of(canonical) or host_of(og_url) or ""
    return Article(
        url=page.url,
        final_url=base,
        host=host,
        fetched_at=page.fetched_at,
        text=text,
        title=document.title,
        author=document.author,
        site_name=document.sitename,
        published_at=_parse_date(document.date),
        lang=(lang or document.language or None) and (lang or document.language).split("-")[0].split("_")[0].lower(),
        canonical_url=canonical,
        og_url=og_url,
        declared_source_url=declared,
        source=page.source,
    )
