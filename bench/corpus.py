"""A generated multilingual news corpus for the benchmark.

Every word below was written for this benchmark (no third-party text). An
article has a language, a topic and a polarity; its headline and body mix
common words with that topic's and that polarity's words, so the labels the
model gives are not all the same. Body lengths follow a log-normal
distribution clipped to 50-800 words (median about 250), like wire copy and
blog posts. The same seed always gives the same articles, byte for byte.

The corpus is written half as feed files (RSS 2.0 and Atom, body as HTML
paragraphs in ``content:encoded``/``content``) and half as JSONL, so the
benchmark exercises both readers.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

LANGUAGES = ("ar", "en", "fr", "ru", "zh")
TOPICS = ("politics", "economy", "sport", "health", "technology")
POLARITIES = ("positive", "negative", "neutral")
MIN_WORDS, MAX_WORDS = 50, 800
MEDIAN_WORDS, LENGTH_SIGMA = 250, 0.75
FEED_ITEMS_PER_FILE = 50
JSONL_LINES_PER_FILE = 200
FIRST_DAY = dt.datetime(2024, 5, 6, tzinfo=dt.timezone.utc)
DAYS = 3

# Per language: common words, one list per topic, positive and negative words.
VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "common": ("the", "a", "of", "and", "in", "on", "for", "with", "said", "on", "today", "new", "after", "year",
                   "people", "officials", "week", "report", "also", "will", "has", "been", "more", "than", "city",
                   "country", "local", "group", "plan", "many", "first", "last", "while", "about", "from", "they"),
        "politics": ("government", "minister", "parliament", "election", "vote", "party", "president", "law",
                     "opposition", "coalition", "campaign", "senate", "reform", "policy", "cabinet"),
        "economy": ("market", "bank", "inflation", "prices", "trade", "company", "shares", "investors", "budget",
                    "growth", "exports", "jobs", "interest", "rates", "profits"),
        "sport": ("match", "team", "goal", "league", "coach", "players", "season", "championship", "final",
                  "stadium", "victory", "tournament", "striker", "score", "fans"),
        "health": ("hospital", "doctors", "patients", "vaccine", "disease", "treatment", "clinic", "virus",
                   "health", "nurses", "medicine", "study", "infection", "care", "symptoms"),
        "technology": ("software", "internet", "phone", "data", "computer", "startup", "artificial", "intelligence",
                       "network", "chips", "app", "users", "security", "cloud", "engineers"),
        "positive": ("success", "record", "improved", "welcomed", "celebrated", "strong", "progress", "hope",
                     "praised", "win"),
        "negative": ("crisis", "fears", "collapse", "protest", "failed", "losses", "warning", "anger", "deadly",
                     "decline"),
    },
    "fr": {
        "common": ("le", "la", "les", "de", "des", "et", "dans", "pour", "avec", "sur", "a", "été", "selon",
                   "cette", "année", "semaine", "nouveau", "aussi", "plus", "ville", "pays", "ont", "depuis",
                   "lors", "premier", "dernier", "responsables", "habitants", "rapport", "projet", "était"),
        "politics": ("gouvernement", "ministre", "parlement", "élection", "vote", "parti", "président", "loi",
                     "opposition", "coalition", "campagne", "sénat", "réforme", "politique", "députés"),
        "economy": ("marché", "banque", "inflation", "prix", "commerce", "entreprise", "actions", "investisseurs",
                    "budget", "croissance", "exportations", "emplois", "taux", "bénéfices", "économie"),
        "sport": ("match", "équipe", "but", "championnat", "entraîneur", "joueurs", "saison", "finale", "stade",
                  "victoire", "tournoi", "attaquant", "supporters", "ligue", "coupe"),
        "health": ("hôpital", "médecins", "patients", "vaccin", "maladie", "traitement", "clinique", "virus",
                   "santé", "infirmières", "médicament", "étude", "infection", "soins", "symptômes"),
        "technology": ("logiciel", "internet", "téléphone", "données", "ordinateur", "start-up", "intelligence",
                       "artificielle", "réseau", "puces", "application", "utilisateurs", "sécurité", "nuage",
                       "ingénieurs"),
        "positive": ("succès", "record", "amélioration", "salué", "célébré", "solide", "progrès", "espoir",
                     "félicité", "réussite"),
        "negative": ("crise", "craintes", "effondrement", "manifestation", "échec", "pertes", "alerte", "colère",
                     "meurtrier", "recul"),
    },
    "ru": {
        "common": ("в", "и", "на", "с", "по", "для", "что", "это", "году", "также", "было", "будет", "новый",
                   "неделе", "после", "более", "город", "страны", "сообщили", "люди", "отчёт", "план", "первый",
                   "последний", "власти", "жители", "из", "при", "около", "они"),
        "politics": ("правительство", "министр", "парламент", "выборы", "голосование", "партия", "президент",
                     "закон", "оппозиция", "коалиция", "кампания", "сенат", "реформа", "политика", "депутаты"),
        "economy": ("рынок", "банк", "инфляция", "цены", "торговля", "компания", "акции", "инвесторы", "бюджет",
                    "рост", "экспорт", "рабочие", "места", "ставки", "прибыль"),
        "sport": ("матч", "команда", "гол", "лига", "тренер", "игроки", "сезон", "чемпионат", "финал", "стадион",
                  "победа", "турнир", "нападающий", "счёт", "болельщики"),
        "health": ("больница", "врачи", "пациенты", "вакцина", "болезнь", "лечение", "клиника", "вирус",
                   "здоровье", "медсёстры", "лекарство", "исследование", "инфекция", "помощь", "симптомы"),
        "technology": ("программа", "интернет", "телефон", "данные", "компьютер", "стартап", "искусственный",
                       "интеллект", "сеть", "чипы", "приложение", "пользователи", "безопасность", "облако",
                       "инженеры"),
        "positive": ("успех", "рекорд", "улучшение", "приветствовали", "праздновали", "сильный", "прогресс",
                     "надежда", "похвалили", "победил"),
        "negative": ("кризис", "опасения", "обвал", "протест", "провал", "потери", "предупреждение", "гнев",
                     "смертельный", "спад"),
    },
    "ar": {
        "common": ("في", "من", "على", "إلى", "أن", "مع", "هذا", "التي", "الذي", "وقال", "العام", "الأسبوع",
                   "الجديد", "أيضا", "بعد", "أكثر", "المدينة", "البلاد", "المسؤولين", "السكان", "تقرير", "خطة",
                   "الأول", "الأخير", "حيث", "كما", "خلال", "منذ", "اليوم", "وفق"),
        "politics": ("الحكومة", "الوزير", "البرلمان", "الانتخابات", "التصويت", "الحزب", "الرئيس", "القانون",
                     "المعارضة", "الائتلاف", "الحملة", "مجلس", "الإصلاح", "السياسة", "النواب"),
        "economy": ("السوق", "البنك", "التضخم", "الأسعار", "التجارة", "الشركة", "الأسهم", "المستثمرين",
                    "الميزانية", "النمو", "الصادرات", "الوظائف", "الفائدة", "الأرباح", "الاقتصاد"),
        "sport": ("المباراة", "الفريق", "هدف", "الدوري", "المدرب", "اللاعبين", "الموسم", "البطولة", "النهائي",
                  "الملعب", "الفوز", "المهاجم", "الجماهير", "الكأس", "النتيجة"),
        "health": ("المستشفى", "الأطباء", "المرضى", "اللقاح", "المرض", "العلاج", "العيادة", "الفيروس", "الصحة",
                   "الممرضات", "الدواء", "دراسة", "العدوى", "الرعاية", "الأعراض"),
        "technology": ("البرمجيات", "الإنترنت", "الهاتف", "البيانات", "الحاسوب", "شركة ناشئة", "الذكاء",
                       "الاصطناعي", "الشبكة", "الرقائق", "التطبيق", "المستخدمين", "الأمن", "السحابة",
                       "المهندسين"),
        "positive": ("نجاح", "رقم قياسي", "تحسن", "رحب", "احتفل", "قوي", "تقدم", "أمل", "أشاد", "انتصار"),
        "negative": ("أزمة", "مخاوف", "انهيار", "احتجاج", "فشل", "خسائر", "تحذير", "غضب", "مميت", "تراجع"),
    },
    "zh": {
        "common": ("的", "在", "和", "了", "是", "对", "今天", "本周", "今年", "新的", "之后", "更多", "城市",
                   "国家", "官员", "居民", "报告", "计划", "首次", "最近", "他们", "表示", "已经", "将会", "以及",
                   "其中", "目前", "相关", "方面", "地区"),
        "politics": ("政府", "部长", "议会", "选举", "投票", "政党", "总统", "法律", "反对派", "联盟", "竞选",
                     "参议院", "改革", "政策", "内阁"),
        "economy": ("市场", "银行", "通胀", "价格", "贸易", "公司", "股票", "投资者", "预算", "增长", "出口",
                    "就业", "利率", "利润", "经济"),
        "sport": ("比赛", "球队", "进球", "联赛", "教练", "球员", "赛季", "冠军", "决赛", "体育场", "胜利",
                  "锦标赛", "前锋", "比分", "球迷"),
        "health": ("医院", "医生", "病人", "疫苗", "疾病", "治疗", "诊所", "病毒", "健康", "护士", "药物",
                   "研究", "感染", "护理", "症状"),
        "technology": ("软件", "互联网", "手机", "数据", "电脑", "初创企业", "人工智能", "网络", "芯片",
                       "应用", "用户", "安全", "云计算", "工程师", "技术"),
        "positive": ("成功", "纪录", "改善", "欢迎", "庆祝", "强劲", "进步", "希望", "赞扬", "获胜"),
        "negative": ("危机", "担忧", "崩溃", "抗议", "失败", "损失", "警告", "愤怒", "致命", "下滑"),
    },
}
SENTENCE_END = {"ar": ".", "en": ".", "fr": ".", "ru": ".", "zh": "。"}
CLAUSE_BREAK = {"ar": "،", "en": ",", "fr": ",", "ru": ",", "zh": "，"}
WORD_JOINER = {"ar": " ", "en": " ", "fr": " ", "ru": " ", "zh": ""}
HOSTS = {"ar": "akhbar.example", "en": "news.example", "fr": "actu.example", "ru": "novosti.example",
         "zh": "xinwen.example"}


@dataclass(frozen=True)
class GeneratedArticle:
    """One article as the benchmark knows it before any pipeline touches it."""

    index: int
    language: str
    topic: str
    polarity: str
    url: str
    title: str
    summary: str
    paragraphs: tuple[str, ...]
    published: dt.datetime
    word_count: int

    @property
    def body(self) -> str:
        return "\n".join(self.paragraphs)


def body_word_count(rng: random.Random) -> int:
    """Log-normal around MEDIAN_WORDS, clipped to [MIN_WORDS, MAX_WORDS]."""
    words = int(round(rng.lognormvariate(math.log(MEDIAN_WORDS), LENGTH_SIGMA)))
    return max(MIN_WORDS, min(MAX_WORDS, words))


def _pick_words(rng: random.Random, language: str, topic: str, polarity: str, count: int) -> list[str]:
    vocabulary = VOCABULARY[language]
    mood = vocabulary[polarity] if polarity != "neutral" else vocabulary["common"]
    pools = ((vocabulary["common"], 0.5), (vocabulary[topic], 0.35), (mood, 0.15))
    words = []
    for _ in range(count):
        draw, cumulative = rng.random(), 0.0
        for pool, share in pools:
            cumulative += share
            if draw <= cumulative:
                words.append(rng.choice(pool))
                break
        else:
            words.append(rng.choice(pools[0][0]))
    return words


def _sentence(words: Sequence[str], language: str, rng: random.Random) -> str:
    joiner = WORD_JOINER[language]
    parts = list(words)
    if len(parts) > 8:
        cut = rng.randint(3, len(parts) - 3)
        parts[cut - 1] = parts[cut - 1] + CLAUSE_BREAK[language]
    text = joiner.join(parts)
    if language in ("en", "fr", "ru"):
        text = text[:1].upper() + text[1:]
    return text + SENTENCE_END[language]


def generate_article(index: int, seed: int = 0) -> GeneratedArticle:
    """Article ``index`` of the corpus for ``seed``: independent of how many are generated."""
    rng = random.Random(f"{seed}:{index}")
    language = LANGUAGES[index % len(LANGUAGES)]
    topic = rng.choice(TOPICS)
    polarity = rng.choice(POLARITIES)
    word_count = body_word_count(rng)
    paragraphs, sentences, written = [], [], 0
    while written < word_count:
        length = min(rng.randint(8, 22), word_count - written)
        sentences.append(_sentence(_pick_words(rng, language, topic, polarity, length), language, rng))
        written += length
        if len(sentences) >= rng.randint(2, 5) or written >= word_count:
            paragraphs.append(WORD_JOINER[language].join(sentences) if language == "zh" else " ".join(sentences))
            sentences = []
    title_words = _pick_words(rng, language, topic, polarity, rng.randint(6, 11))
    title = WORD_JOINER[language].join(title_words)
    if language in ("en", "fr", "ru"):
        title = title[:1].upper() + title[1:]
    first_sentence = paragraphs[0].split(SENTENCE_END[language])[0] + SENTENCE_END[language]
    published = FIRST_DAY - dt.timedelta(days=rng.randrange(DAYS), minutes=rng.randrange(24 * 60))
    return GeneratedArticle(
        index=index, language=language, topic=topic, polarity=polarity,
        url=f"https://{HOSTS[language]}/{topic}/{index:06d}-{seed}",
        title=title, summary=first_sentence, paragraphs=tuple(paragraphs),
        published=published, word_count=word_count)


def generate_articles(count: int, seed: int = 0) -> list[GeneratedArticle]:
    """The first ``count`` articles for ``seed``; a larger count extends a smaller one."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [generate_article(index, seed) for index in range(count)]


def _rss(articles: Sequence[GeneratedArticle], language: str) -> str:
    items = "".join(
        "<item>"
        f"<title>{escape(a.title)}</title><link>{escape(a.url)}</link><guid>{escape(a.url)}</guid>"
        f"<pubDate>{a.published.strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate>"
        f"<description>{escape(a.summary)}</description>"
        f"<content:encoded>{escape(''.join(f'<p>{escape(p)}</p>' for p in a.paragraphs))}</content:encoded>"
        "</item>"
        for a in articles)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
            f"<title>Benchmark {language}</title><link>https://{HOSTS[language]}/</link>"
            f"<language>{language}</language>{items}</channel></rss>\n")


def _atom(articles: Sequence[GeneratedArticle], language: str) -> str:
    entries = "".join(
        "<entry>"
        f"<title>{escape(a.title)}</title><link href=\"{escape(a.url)}\"/><id>{escape(a.url)}</id>"
        f"<updated>{a.published.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>"
        f"<summary>{escape(a.summary)}</summary>"
        f"<content type=\"html\">{escape(''.join(f'<p>{escape(p)}</p>' for p in a.paragraphs))}</content>"
        "</entry>"
        for a in articles)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{language}">'
            f"<title>Benchmark {language}</title><id>https://{HOSTS[language]}/</id>"
            f"<updated>{FIRST_DAY.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>{entries}</feed>\n")


def jsonl_record(article: GeneratedArticle) -> dict:
    return {"url": article.url, "title": article.title, "summary": article.summary, "body": article.body,
            "published": article.published.isoformat(), "lang": article.language,
            "source": f"https://{HOSTS[article.language]}/"}


def _chunks(items: Sequence, size: int) -> Iterable[tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start // size, items[start:start + size]


def write_corpus(articles: Sequence[GeneratedArticle], folder: str | Path) -> list[Path]:
    """Write even-indexed articles as feeds (RSS for ar/fr/zh, Atom for en/ru) and
    odd-indexed ones as JSONL, per language; return the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for language in LANGUAGES:
        mine = [a for a in articles if a.language == language]
        in_feeds = [a for a in mine if a.index % 2 == 0]
        in_jsonl = [a for a in mine if a.index % 2 == 1]
        atom = language in ("en", "ru")
        for number, chunk in _chunks(in_feeds, FEED_ITEMS_PER_FILE):
            path = folder / f"{language}-{number:04d}.{'atom' if atom else 'rss'}"
            path.write_text(_atom(chunk, language) if atom else _rss(chunk, language), encoding="utf-8")
            written.append(path)
        for number, chunk in _chunks(in_jsonl, JSONL_LINES_PER_FILE):
            path = folder / f"{language}-{number:04d}.jsonl"
            path.write_text("".join(json.dumps(jsonl_record(a), ensure_ascii=False) + "\n" for a in chunk),
                            encoding="utf-8")
            written.append(path)
    return written


def labelling_texts(articles: Sequence[GeneratedArticle]) -> list[str]:
    """The text newsbeam's labeller reads for each article (headline + lead)."""
    from newsbeam.labelling.input_text import article_text

    return [article_text(a.title, a.summary, a.body) for a in articles]


def page_html(article: GeneratedArticle) -> bytes:
    """The article's own web page: navigation, the article, a footer."""
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in article.paragraphs)
    return (f'<!doctype html><html lang="{article.language}"><head><meta charset="utf-8">'
            f"<title>{escape(article.title)}</title></head><body>"
            f'<nav><a href="/">Home</a> <a href="/{article.topic}/">{article.topic}</a></nav>'
            f"<article><h1>{escape(article.title)}</h1>"
            f'<time datetime="{article.published.isoformat()}">{article.published:%Y-%m-%d}</time>'
            f"{paragraphs}</article><footer>Benchmark site</footer></body></html>").encode("utf-8")


def summary_feed(articles: Sequence[GeneratedArticle], language: str, link_of) -> bytes:
    """An RSS feed with headline and summary only, linking to each article's page."""
    items = "".join(
        "<item>"
        f"<title>{escape(a.title)}</title><link>{escape(link_of(a))}</link><guid>{escape(link_of(a))}</guid>"
        f"<pubDate>{a.published.strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate>"
        f"<description>{escape(a.summary)}</description></item>"
        for a in articles)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>Benchmark {language}</title><link>https://{HOSTS[language]}/</link>"
            f"<language>{language}</language>{items}</channel></rss>\n").encode("utf-8")
