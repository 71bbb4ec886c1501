"""Records cross shuffles packed: smaller, and unchanged once unpacked."""
from newsbeam.packing import pack, unpack
from newsbeam.records import Article, DeadLetter
from newsbeam.transforms.dedup import ranked_and_packed, survivor_rank
from tests.support.builders import make_article

ARABIC_BODY = ("أعلنت وزارة الصحة اليوم عن خطة جديدة لتحسين الخدمات في المستشفيات الحكومية، "
               "وقال الوزير إن الخطة تشمل تدريب الأطباء وتوفير الأجهزة الحديثة. ") * 12


def test_a_labelled_article_round_trips_with_its_tuples_and_floats():
    article = make_article(1, lang="ar").replace(
        body=ARABIC_BODY, summary=ARABIC_BODY[:300], authors=("أحمد", "B"), tags=(),
        topic="health", topic_score=0.8123, topic_scores=(("health", 0.8123), ("politics", 0.1)),
        sentiment="neutral", sentiment_score=1 / 3, language_score=0.99)
    assert unpack(pack(article), Article) == article


def test_a_packed_article_is_much_smaller_than_its_text():
    article = make_article(1, lang="ar").replace(body=ARABIC_BODY)
    assert len(pack(article)) < len(ARABIC_BODY.encode("utf-8")) / 3


def test_broken_text_from_a_feed_survives_packing():
    letter = DeadLetter(source="feed.xml", stage="parse", reason="bad \udcff byte", excerpt="\ud800 lone")
    assert unpack(pack(letter), DeadLetter) == letter


def test_what_a_dedup_shuffle_carries_decides_without_unpacking():
    article = make_article(2).replace(body="a body " * 200)
    rank, content_hash, packed = ranked_and_packed(article)
    assert rank == survivor_rank(article) and content_hash == article.content_hash
    assert unpack(packed, Article) == article


def test_an_article_with_its_embedding_bytes_round_trips():
    from newsbeam.embeddings import to_record

    vector = [0.5, -0.5, 0.5, -0.5]
    embedding, scale = to_record(__import__("numpy").array(vector, dtype="float32"))
    article = make_article(3).replace(embedding=embedding, embedding_scale=scale, story_id="st-1")
    back = unpack(pack(article), Article)
    assert back == article and isinstance(back.embedding, bytes) and back.embedding == embedding
