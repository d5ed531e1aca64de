"""The learned complexity scorer: exactness against scikit-learn, real bilingual examples, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.features import FEATURE_NAMES, FeatureExtractor
from router.learned import LearnedScorer
from router.model import ComplexityModel, ngram_text
from router.train import Labelled, featurize, train
from textkit.conversation import read_conversation


@pytest.fixture(scope="module")
def scorer() -> LearnedScorer:
    return LearnedScorer.from_paths()


def user(text):
    return [{"role": "user", "content": text}]


# Real questions of both kinds, as a Chinese finance/manufacturing user would ask them.
ZH_MULTI_STEP = [
    "某公司2023年营收1.2亿元，2024年增长15%，毛利率从32%降到28%。请分别计算两年的毛利额，对比变化，并分析原因。",
    "请对比华东精工和南方重工两家公司的产品线、客户结构和毛利率，分别列举优劣势，并给出合作建议。",
    "一笔500万元的设备投资，每年节省人工成本120万元，维护费每年20万元，折现率8%，请计算5年的净现值和投资回收期，并说明是否值得投资。",
    "比较固定利率贷款和浮动利率贷款在未来三年利率上升1.5个百分点时的总利息支出，列出计算过程并给出建议。",
]
ZH_LOOKUP = [
    "华东精工的客服电话是多少？",
    "北京是哪一年成为首都的？",
    "公司总部地址在哪里？",
    "什么是市盈率？",
]


@pytest.mark.parametrize("hard", ZH_MULTI_STEP)
def test_chinese_multi_step_scores_above_every_lookup(scorer, hard):
    hard_score = scorer.score(user(hard))
    for easy in ZH_LOOKUP:
        assert hard_score > scorer.score(user(easy)), (hard, easy)


def test_english_reasoning_above_lookup(scorer):
    assert scorer.score(user("Prove that there are infinitely many primes, then derive their density.")) > \
        scorer.score(user("What is the capital of France?"))


@pytest.mark.parametrize(
    "messages",
    [
        [],
        user(""),
        user("   \n\t  "),
        [{"role": "user", "content": None}],
        [{"role": "user", "content": [{"type": "text", "text": "描述这张图"},
                                      {"type": "image_url", "image_url": {"url": "data:x"}}]}],
        user("字" * 100_000),
        user("x" * 100_000),
        user("bad \ud800 surrogate \udfff text"),
        [{"role": "system"}, "not a message", 42, {"content": "no role"}],
        "not a list",
    ],
)
def test_bad_input_gets_a_score_not_an_exception(scorer, messages):
    score = scorer.score(messages)
    assert 0.0 <= score <= 1.0 and not math.isnan(score)


def test_images_count_as_a_feature():
    conv = read_conversation([{"role": "user", "content": [
        {"type": "text", "text": "what is in it"}, {"type": "image_url", "image_url": {"url": "u"}},
        {"type": "image_url", "image_url": {"url": "v"}}]}])
    assert conv.images == 2 and conv.ask == "what is in it"


def test_huge_prompts_are_bounded_before_analysis():
    conv = read_conversation(user("a" * 100_000))
    assert len(conv.ask) < 3000 and conv.total_chars == 100_000


def test_follow_up_turns_raise_the_score(scorer):
    single = user("那第二个方案呢？")
    follow = [{"role": "user", "content": "比较两个采购方案的成本。"},
              {"role": "assistant", "content": "方案一总成本120万元，方案二总成本105万元。"},
              {"role": "user", "content": "那第二个方案呢？"}]
    assert scorer.score(follow) > scorer.score(single)


def _tiny_data() -> Labelled:
    rng = np.random.default_rng(0)
    hard = ["Prove the theorem and derive the bound step by step with numbers 3, 5 and 7.",
            "请分别计算两家公司的净利润并对比分析原因。", "Compute the integral of x^2 from 0 to 3 and explain."]
    easy = ["What is the capital of France?", "公司电话是多少？", "Who wrote Hamlet?"]
    messages, weak, strong = [], [], []
    for i in range(120):
        is_hard = i % 2 == 0
        text = (hard if is_hard else easy)[i % 3] + f" #{i}"
        messages.append(user(text))
        weak.append(0.0 if is_hard and rng.random() < 0.8 else 1.0)
        strong.append(1.0)
    return Labelled([str(i) for i in range(120)], messages, np.array(weak), np.array(strong), np.zeros(120, int))


def test_pure_python_scoring_matches_scikit_learn(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    data = _tiny_data()
    model = train(data, max_ngrams=500)
    path = tmp_path / "m.json.gz"
    model.save(path)
    model = ComplexityModel.load(path)
    grams = list(model.vocab)
    vec = TfidfVectorizer(analyzer="char", ngram_range=model.ngram_range, sublinear_tf=True, lowercase=False,
                          vocabulary={g: i for i, g in enumerate(grams)})
    vec.idf_ = np.array([model.vocab[g][0] for g in grams])
    ngram_coef = np.array([model.vocab[g][1] for g in grams])
    samples = ["Prove it for n = 10, then compute 2^n.", "公司电话是多少？", "", "Mixed 中文 and English, 3 numbers 4 5"]
    x_feat, texts = featurize([user(s) for s in samples])
    for i, text in enumerate(samples):
        z = [0.0 if s == 0 else max(-4.0, min(4.0, (v - m) / s)) for v, m, s in zip(x_feat[i], model.mean, model.scale, strict=True)]
        expected = model.intercept + float(np.dot(z, model.coef)) + float((vec.transform([texts[i]]) @ ngram_coef)[0])
        assert model.decision(read_conversation(user(text)), FeatureExtractor()) == pytest.approx(expected, abs=1e-4)
        assert texts[i] == ngram_text(text)


def test_trained_model_ranks_its_hard_examples_higher(tmp_path):
    model = train(_tiny_data(), max_ngrams=500)
    features = FeatureExtractor()
    assert model.score(user("Prove the theorem and derive the bound step by step with numbers 3, 5 and 7."), features)\
        > model.score(user("Who wrote Hamlet?"), features)
    assert 0.0 <= model.score(user("anything"), features) <= 1.0
    assert model.feature_names == FEATURE_NAMES


def test_training_needs_both_outcomes():
    data = _tiny_data()
    data.weak[:] = 1.0
    with pytest.raises(ValueError, match="both outcomes"):
        train(data, max_ngrams=100)


def test_load_rejects_other_files(tmp_path):
    import gzip

    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a qroute complexity model"):
        ComplexityModel.load(bad)


def test_domain_dictionary_terms_count(tmp_path):
    from router.domain import load_terms

    path = tmp_path / "dict.txt"
    path.write_text("# terms\n澜沧智造 10 nz\n启明风控云\n", encoding="utf-8")
    terms = load_terms(path)
    assert terms == {"澜沧智造", "启明风控云"}
    values = FeatureExtractor(domain_terms=terms).extract(read_conversation(user("澜沧智造想了解启明风控云")))
    assert values[FEATURE_NAMES.index("domain_terms")] > 0
    assert load_terms(None) == frozenset()



def test_correction_zero_is_length_alone_and_batch_decisions_match(tmp_path):
    data = _tiny_data()
    model = train(data, max_ngrams=0, correction=0.0)
    texts = ["hi", "Who wrote Hamlet and when?", "字" * 30, "Prove it. " * 20, "公司电话是多少？请告诉我。" * 5]
    features = FeatureExtractor()
    decisions = [model.decision(read_conversation(user(t)), features) for t in texts]
    lengths = [features.extract(read_conversation(user(t)))[FEATURE_NAMES.index("log_tokens")] for t in texts]
    assert np.argsort(decisions).tolist() == np.argsort(lengths).tolist()  # nothing but length moves it
    x_feat, _ = featurize([user(t) for t in texts])
    asks = [read_conversation(user(t)).ask for t in texts]
    assert model.decisions(x_feat, asks) == pytest.approx(decisions)
    shrunk = train(data, max_ngrams=300, correction=0.5)
    assert shrunk.decisions(x_feat, asks) == pytest.approx(
        [shrunk.decision(read_conversation(user(t)), features) for t in texts])


def test_the_same_length_scores_the_same_in_chinese_and_english(scorer):
    # Length is counted in estimated tokens: 40 Chinese characters weigh what 160 Latin ones do.
    assert scorer.score(user("字" * 40)) == pytest.approx(scorer.score(user("abcd" * 40)), abs=0.02)


def test_scores_still_rank_outside_the_training_range(scorer):
    assert 0.0 < scorer.score(user("hi")) < scorer.score(user("hi there, how are you?")) < 0.05
    assert scorer.score(user("字" * 5000)) <= 1.0
