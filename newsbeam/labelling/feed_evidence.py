"""Subject evidence from a feed's own words: its ``<category>`` tags and the
section path of the article URL (:func:`subject_evidence`).

Feeds already say which desk an article comes from: ``<category>Sport</category>``,
``/economie/``, ``/ar/culture-and-art/``, ``/khel/``. That is evidence the
labeller can weigh next to the text. The table below is written by hand from
general knowledge of newsroom section names in many languages, not from
newsbeam's evaluation data. A word that names no single subject is left out:
"world", "news", "opinion", "video", place names, and words that mean two
things (Spanish "tiempo" is weather and time, "sucesos" is crime and accidents,
Italian "cronaca" is any local news, Swahili "sanaa" is also Yemen's capital).

Words are compared after folding: Unicode NFKC, case folding (``ß`` -> ``ss``),
accents stripped from Latin letters (``économie`` == ``economie``), and for
Arabic script hamza and harakat dropped, ``ة``/``ى`` unified and a leading
``ال`` removed. A tag or URL segment is split on ``/ - _ + & , ; : '`` and
spaces, and matches whole words or a whole run of words (``rugby union``,
``culture-and-art``, ``faits divers``), never part of a word.

The host name is never evidence, subdomains included: ``sport.example.com``
may be a desk, but hosts are also brands (``sportsmole``, ``technologyreview``,
``money.cnn``-style hubs mixing desks), so only the path is read.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional, Sequence
from urllib.parse import unquote, urlsplit

# subject id -> section / category words, space-separated, a multi-word entry
# hyphenated; each subject runs en fr es pt it de nl ar ru tr id sw ha hi.
SECTION_WORDS: dict[str, tuple[str, ...]] = {
    "sport": (
        "sport sports football soccer cricket tennis rugby rugby-union rugby-league golf boxing athletics",  # en
        "cycling basketball baseball hockey motorsport olympics formula-one nfl nba foot cyclisme",  # en fr
        "deportes deporte fútbol baloncesto tenis ciclismo esportes esporte desporto futebol calcio",  # es pt it
        "fußball fussball voetbal wielrennen رياضة كرة-القدم riyada riyadah спорт футбол хоккей",  # de nl ar ru
        "spor futbol basketbol olahraga sepakbola sepak-bola bola michezo wasanni खेल क्रिकेट khel",  # tr id sw ha hi
    ),
    "economy_business_finance": (
        "economy economics business finance markets money personal-finance real-estate property companies",  # en
        "stocks stock-market banking investing investment crypto cryptocurrency trade",  # en
        "économie entreprises bourse finances argent immobilier economía negocios finanzas mercados",  # fr es
        "empresas dinero bolsa economia negócios finanças dinheiro finanza borsa mercati aziende soldi",  # es pt it
        "wirtschaft finanzen börse boerse unternehmen geld immobilien economie financien beurs bedrijven",  # de nl
        "اقتصاد أسواق بورصة مال-وأعمال aswaq iqtisad ebusiness экономика бизнес финансы рынки недвижимость",  # ar ru
        "ekonomika biznes ekonomi finans piyasa piyasalar emlak bisnis keuangan saham properti finansial",  # ru tr id
        "uchumi biashara tattalin-arziki kasuwanci कारोबार व्यापार बिज़नेस अर्थव्यवस्था vyapar karobar share-market",
    ),
    "politics": (
        "politics political elections election government parliament diplomacy us-politics uk-politics",  # en
        "politique élections gouvernement política elecciones gobierno eleições governo elezioni",  # fr es pt it
        "politik wahlen regierung parlament politiek verkiezingen سياسة انتخابات siyasa политика выборы",  # de nl ar ru
        "politika siyaset seçim pemilu siasa uchaguzi zabe राजनीति चुनाव rajniti rajneeti chunav",  # tr id sw ha hi
    ),
    "crime_law_justice": (
        "crime crimes justice courts court law legal police policing crime-and-justice true-crime",  # en
        "faits-divers tribunaux criminalité justicia tribunales policiales judicial crimen policía",  # fr es
        "justiça tribunais giustizia cronaca-nera criminalità polizei justiz kriminalität kriminalitaet",  # pt it de
        "gericht gerichte recht misdaad justitie rechtspraak politie جريمة جرائم محاكم محاكمة شرطة",  # de nl ar
        "криминал преступность суд право полиция asayiş yargı adliye polis hukum kriminal kriminalitas",  # ru tr id
        "polisi uhalifu mahakama laifuka kotu अपराध क्राइम कानून apradh",  # sw ha hi
    ),
    "health": (
        "health medicine medical santé médecine salud saúde salute medicina gesundheit medizin gezondheid",
        "صحة طب sahha здоровье медицина sağlık kesehatan afya lafiya स्वास्थ्य सेहत swasthya sehat",  # ar .. hi
    ),
    "science_technology": (
        "science sciences tech technology space gadgets internet science-and-technology artificial-intelligence",
        "cybersecurity technologie high-tech numérique ciencia tecnología ciência scienza scienze",  # en fr es pt it
        "wissenschaft wissen technik digital netzwelt wetenschap techniek علوم تكنولوجيا تقنية",  # de nl ar
        "наука технологии hi-tech nauka bilim teknoloji teknologi sains sayansi teknolojia kimiyya",  # ru tr id sw ha
        "विज्ञान टेक्नोलॉजी तकनीक vigyan",  # hi
    ),
    "arts_culture_entertainment_media": (
        "culture arts art entertainment film films movies cinema music books television celebrity celebrities",
        "showbiz theatre theater media culture-and-art arts-and-culture musique livres médias spectacles",  # en fr
        "cultura cine música libros espectáculos entretenimiento farándula arte livros entretenimento famosos",
        "spettacoli spettacolo libri kultur kino musik literatur medien feuilleton promis cultuur muziek boeken",
        "ثقافة فن فنون سينما موسيقى thaqafa культура кино музыка шоу-бизнес kultura sanat sinema müzik",  # ar ru tr
        "kültür-sanat hiburan budaya seleb selebriti burudani utamaduni nishadi मनोरंजन बॉलीवुड फिल्म manoranjan",
        "bollywood",  # hi
    ),
    "environment": (
        "environment climate climate-change wildlife conservation ecology environnement planète climat",  # en fr
        "écologie medio-ambiente medioambiente ambiente meio-ambiente ecología umwelt klima klimaat milieu",
        "بيئة مناخ экология климат çevre iklim lingkungan mazingira muhalli पर्यावरण paryavaran",  # ar .. hi
    ),
    "education": (
        "education schools universities higher-education éducation enseignement educación educação",  # en fr es pt
        "istruzione scuola università escuela bildung schule hochschule onderwijs تعليم образование",  # it .. ru
        "eğitim pendidikan elimu ilimi शिक्षा shiksha",  # tr id sw ha hi
    ),
    "religion": (
        "religion religions faith religión religião religione religie kirche glaube spiritualité",  # en .. fr
        "دين إسلاميات религия agama religi dini addini धर्म dharm dharma",  # ar ru id sw ha hi
    ),
    "lifestyle_leisure": (
        "lifestyle travel food style fashion beauty recipes leisure food-and-drink home-and-garden wellbeing",  # en
        "voyage voyages gastronomie cuisine mode loisirs art-de-vivre bien-être viajes gastronomía comida",  # fr es
        "moda estilo-de-vida ocio recetas viagem viagens viaggi cucina ricette reise reisen stil genuss",  # es pt it de
        "rezepte reizen eten سفر موضة أزياء مطبخ لايف-ستايل путешествия стиль мода еда yaşam seyahat",  # de nl ar ru tr
        "gaya-hidup wisata kuliner mitindo लाइफस्टाइल जीवनशैली यात्रा फैशन",  # id sw hi
    ),
    "labour": (
        "labour labor jobs work employment unions trade-unions workplace workers emploi travail syndicats",  # en fr
        "retraites chômage trabajo empleo sindicatos laboral emprego trabalho lavoro sindacati arbeit",  # fr .. de
        "arbeitsmarkt gewerkschaften werk vakbonden وظائف توظيف труд занятость istihdam ketenagakerjaan",  # de .. id
        "ajira नौकरी रोजगार naukri rozgar",  # sw hi
    ),
    "society": (
        "society social-affairs human-rights société sociedad sociedade società gesellschaft samenleving",  # en .. nl
        "مجتمع общество obshchestvo toplum masyarakat jamii समाज samaj",  # ar ru tr id sw hi
    ),
    "conflict_war_peace": (
        "war conflict conflicts defense defence military terrorism armed-forces guerre défense armée armées",  # en fr
        "militaire terrorisme guerra defensa conflictos terrorismo fuerzas-armadas defesa difesa forze-armate",
        "militar krieg verteidigung bundeswehr terror oorlog defensie حرب حروب نزاعات إرهاب война армия",  # .. ar ru
        "оборона терроризм savunma terör militer pertahanan perang migogoro ugaidi युद्ध रक्षा सेना",  # ru .. hi
    ),
    "disaster_accident_emergency": (
        "disaster disasters natural-disasters accidents earthquake earthquakes flood floods wildfires",  # en
        "catastrophe catastrophes catastrophes-naturelles desastres desastres-naturales accidentes disastri",
        "katastrophen unglück unglueck rampen كوارث كارثة катастрофы afet deprem bencana majanga ajali hatsari आपदा",
    ),
    "weather": (
        "weather météo wetter weer meteorología meteorologia previsão-do-tempo طقس погода hava-durumu cuaca",
        "hali-ya-hewa मौसम mausam",  # sw hi
    ),
    "human_interest": (
        "offbeat oddly-enough odd-news weird-news bizarre insolite insolites curiosidades curiosità kurioses",
        "طرائف غرائب курьёзы курьезы ilginç अजब-गजब ajab-gajab",  # ar ru tr hi
    ),
}

SEPARATORS = re.compile(r"[\s/\-_+&,;:|'\u2019]+")
# ة->ه, ى->ي, no tatweel; Turkish dotless ı -> i as in ASCII slugs (saglik, yargi)
LETTERS = str.maketrans({"\u0629": "\u0647", "\u0649": "\u064a", "\u0640": None, "\u0131": "i"})
MAX_SEGMENT_CHARS = 40
SLUG_MIN_WORDS = 4


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return "latin" if name.startswith("LATIN") else "arabic" if name.startswith("ARABIC") else ""


def fold(text: str) -> str:
    """NFKC, case-folded, accents stripped from Latin and Arabic letters."""
    kept: list[str] = []
    for char in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold()):
        if unicodedata.combining(char) and kept and _script(kept[-1]) in ("latin", "arabic"):
            continue
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept)).translate(LETTERS)


def words(text: str) -> list[str]:
    """The folded words of a tag or URL segment (a leading Arabic article removed)."""
    found = []
    for word in SEPARATORS.split(fold(text)):
        if len(word) >= 4 and word.startswith("\u0627\u0644") and _script(word[0]) == "arabic":
            word = word[2:]
        if word:
            found.append(word)
    return found


def _build_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for subject, lines in SECTION_WORDS.items():
        for entry in " ".join(lines).split():
            key = "-".join(words(entry))
            if table.setdefault(key, subject) != subject:
                raise ValueError(f"{entry!r} names both {table[key]} and {subject}")
    return table


TABLE: dict[str, str] = _build_table()
EVIDENCE_SUBJECTS: frozenset[str] = frozenset(TABLE.values())
LONGEST_ENTRY = max(key.count("-") + 1 for key in TABLE)


def _subjects_in(text: str) -> list[str]:
    """Subjects named by whole words or runs of words of ``text``, left to right, longest run first."""
    tokens = words(text)
    found, start = [], 0
    while start < len(tokens):
        size = min(LONGEST_ENTRY, len(tokens) - start)
        while size > 1 and "-".join(tokens[start:start + size]) not in TABLE:
            size -= 1  # "trade unions" is labour as a whole, not also "trade" (economy)
        subject = TABLE.get("-".join(tokens[start:start + size]))
        if subject is not None:
            found.append(subject)
        start += size
    return found


def _is_slug(segment: str) -> bool:
    return len([part for part in re.split(r"[-_]+", segment) if part]) >= SLUG_MIN_WORDS


def url_sections(url: Optional[str]) -> list[str]:
    """The section segments of a URL's path: not the host, query, dates, ids or the article's slug."""
    if not url:
        return []
    parts = urlsplit(url.strip())
    if not parts.netloc and not parts.path.startswith("/"):
        parts = urlsplit("//" + url.strip())  # "example.com/sport/x": the first segment is the host
    segments = [unquote(segment) for segment in parts.path.split("/") if segment]
    while segments and "." in segments[-1]:  # a file name: index.html, story_123.html
        segments.pop()
    if segments and _is_slug(segments[-1]):
        segments.pop()
    return [s for s in segments if len(s) <= MAX_SEGMENT_CHARS and not any(c.isdigit() for c in s)]


def subject_evidence(tags: Sequence[str], url: Optional[str]) -> tuple[str, ...]:
    """The distinct subject ids the tags, then the URL's path sections, name; () when none."""
    found: dict[str, None] = {}
    for text in [*(tags or ()), *url_sections(url)]:
        for subject in _subjects_in(text):
            found.setdefault(subject, None)
    return tuple(found)
