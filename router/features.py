"""Cheap, bilingual (Chinese and English) complexity features of a conversation.

Each feature is a number with a plain-words name, so `qroute route explain` can say what moved a
score. Length is counted in estimated model tokens (textkit.tokens), the same for Chinese and
English; `count_tokens` (words: jieba for Chinese, HMM off, a regex for the rest) is kept for
callers that want words. All inputs are already bounded by textkit.conversation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from textkit.cjk import CJK_RANGES, CJK_RUN
from textkit.conversation import Conversation
from textkit.segmenter import Segmenter
from textkit.tokens import approx_tokens

_LATIN_TOKEN = re.compile(rf"[A-Za-z]+|\d+(?:[.,]\d+)*|[^\sA-Za-z\d{CJK_RANGES}]")
_NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:[.,]\d+)*%?")
_FORMULA = re.compile(r"[=+\-*/^√∑∫≤≥≠±×÷]|\\frac|\\sqrt|\\sum|\\int|\$[^$]+\$|\b(?:sin|cos|log|ln|lim)\b")
_UNIT = re.compile(
    r"\d\s*(?:%|kg|km|cm|mm|m/s|ms|kb|mb|gb|tb|kwh|w|v|hz|°c|元|万元|亿元|万|亿|吨|千克|公里|米|小时|分钟|秒|天|年|月|个|件|台|人)(?![A-Za-z])",
    re.IGNORECASE,
)
_CODE_TOKENS = ("```", "def ", "class ", "return ", "import ", "#include", "function ", "=>", "const ", "var ",
                "public ", "select ", "print(", "printf(", "console.", "();", "){", ") {", "</")
_CODE_LINE_END = re.compile(r"[{};]$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d+[.)、]|[一二三四五六七八九十]+[、.]|[（(]\d+[）)])\s*", re.MULTILINE)
# Options A-J, one per line or several on one line ("A. was doing  B. would do"), as exams write them.
_CHOICES = re.compile(r"(?:^|\s)\(?[A-J][.)．、:：]\s", re.MULTILINE)
_DIGIT = re.compile(r"\d")
_SENTENCE_END = re.compile(r"(?<=[a-z)\]\"'])[.!?](?:\s|$)|[。！？]")  # not "21." or "A."

_ASK_MARKERS_ZH = ("列举", "分别", "对比", "比较", "以及", "并且", "同时", "还有", "另外", "其次", "然后", "最后", "各自")
_ASK_MARKERS_EN = ("list", "respectively", "compare", "as well as", "and also", "also", "then", "finally",
                   "each of", "both", "first", "second")
_REASON_ZH = ("为什么", "如何", "怎么", "分析", "推导", "证明", "计算", "权衡", "评估", "原因", "影响", "方案",
              "策略", "优化", "预测", "解释", "论证", "推理", "规划", "设计", "利弊", "优劣", "可行性", "风险")
_REASON_EN = ("why", "how", "prove", "derive", "trade-off", "tradeoff", "analyze", "analyse", "explain",
              "evaluate", "justify", "design", "plan", "optimize", "estimate", "calculate", "compute",
              "solve", "reason", "implications", "step by step", "roi")
_CONSTRAINT_ZH = ("不超过", "不少于", "字以内", "以内", "格式", "表格", "json", "要求", "必须", "只能", "列出", "分点",
                  "用中文", "用英文", "摘要", "总结")
_CONSTRAINT_EN = ("at most", "no more than", "at least", "words", "format", "table", "json", "must", "only",
                  "bullet", "in english", "in chinese", "exactly", "summar", "within", "markdown")
_FOLLOW_UP_ZH = ("上面", "刚才", "之前", "前面", "这个", "那个", "继续", "再", "还是", "它")
_FOLLOW_UP_EN = ("above", "previous", "earlier", "that one", "this one", "continue", "again", "it ", "they ",
                 "instead", "what about")
_LOOKUP_ZH = ("是什么", "是谁", "是多少", "在哪", "哪一年", "什么时候", "多少钱", "电话", "地址", "定义")
_LOOKUP_EN = ("what is", "who is", "who was", "when did", "when was", "where is", "define", "what's",
              "how many", "which year")

FEATURE_NAMES: tuple[str, ...] = (
    "log_tokens", "cjk_share", "question_marks", "distinct_asks", "bullets", "reasoning_markers",
    "numbers", "formulas", "units", "code", "output_constraints", "turns", "follow_up", "domain_terms",
    "images", "choices", "lookup_phrasing", "context_tokens", "system_tokens", "lines",
    "sentences", "digit_share",
)

# Described (explain says them) but never weighted: the share of Chinese text says which language a
# request is in, not how hard it is, and a weight learned for it is a fact about the training files.
UNWEIGHTED: frozenset[str] = frozenset({"cjk_share"})

# Plain words for `explain`: what a value above, and below, the training average means.
FEATURE_WORDS: dict[str, tuple[str, str]] = {
    "log_tokens": ("a long request", "a short request"),
    "cjk_share": ("mostly Chinese text", "little Chinese text"),
    "question_marks": ("several questions", "few question marks"),
    "distinct_asks": ("several distinct asks (列举/分别/对比/以及, list, compare)", "a single ask"),
    "bullets": ("a bulleted or numbered list", "no list"),
    "reasoning_markers": ("reasoning words (为什么/如何/分析/推导/证明/计算, why/how/prove)", "no reasoning words"),
    "numbers": ("numbers to work with", "few numbers"),
    "formulas": ("formulas or math notation", "no formulas"),
    "units": ("quantities with units", "no quantities with units"),
    "code": ("code", "no code"),
    "output_constraints": ("constraints on the output (format, length, language)", "no output constraints"),
    "turns": ("a longer conversation", "a single turn"),
    "follow_up": ("a follow-up that leans on earlier turns", "no follow-up"),
    "domain_terms": ("company or domain terms", "no company or domain terms"),
    "images": ("images", "no images"),
    "choices": ("a multiple-choice question", "not a multiple-choice question"),
    "lookup_phrasing": ("single-fact lookup phrasing (是什么/是多少, what is/who is)", "no lookup phrasing"),
    "context_tokens": ("earlier conversation to take into account", "no earlier conversation"),
    "system_tokens": ("long system instructions", "short or no system instructions"),
    "lines": ("many lines", "few lines"),
    "sentences": ("several sentences", "one short sentence"),
    "digit_share": ("mostly digits and figures", "few digits"),
}

_JIEBA_CHARS = 400  # Chinese characters segmented exactly; beyond that, extrapolated


def _count_any(text: str, needles: Iterable[str]) -> int:
    return sum(1 for n in needles if n in text)


def _log1(x: float) -> float:
    return math.log1p(x)


class FeatureExtractor:
    """Turns a conversation into the feature vector. Owns its segmenter: the router cuts text
    exactly as at training time, plus its own configured domain terms, whatever else the
    process has loaded."""

    def __init__(self, segmenter: Segmenter | None = None, domain_terms: Iterable[str] = ()) -> None:
        self.domain_terms = frozenset(domain_terms)
        self.segmenter = segmenter if segmenter is not None else Segmenter(sorted(self.domain_terms))

    def count_tokens(self, text: str) -> int:
        """Words: jieba words for Chinese runs, regex tokens for the rest."""
        runs = CJK_RUN.findall(text)
        cjk_chars = sum(len(r) for r in runs)
        cut_chars, words = 0, 0
        for run in runs:
            if cut_chars >= _JIEBA_CHARS:
                break
            words += len(self.segmenter.cut(run)) if len(run) > 1 else 1
            cut_chars += len(run)
        segmented = round(words * cjk_chars / cut_chars) if cut_chars else 0
        return segmented + len(_LATIN_TOKEN.findall(CJK_RUN.sub(" ", text)))

    def extract(self, conv: Conversation) -> list[float]:
        """The feature vector, in FEATURE_NAMES order."""
        ask = conv.ask
        low = ask.lower()
        cjk_chars = sum(len(r) for r in CJK_RUN.findall(ask))
        # Length in estimated model tokens (one per CJK character, four other characters per
        # token), so Chinese and English compare; a cut ask is scaled back to its full length.
        tokens = approx_tokens(ask) * (conv.total_chars / len(ask) if 0 < len(ask) < conv.total_chars else 1.0)
        asks = _count_any(ask, _ASK_MARKERS_ZH) + _count_any(low, _ASK_MARKERS_EN)
        questions = ask.count("?") + ask.count("？")
        domain = sum(1 for term in self.domain_terms if term in ask)
        return [
            _log1(tokens),
            cjk_chars / max(len(ask), 1),
            _log1(questions),
            _log1(asks),
            _log1(len(_BULLET.findall(ask))),
            _log1(_count_any(ask, _REASON_ZH) + _count_any(low, _REASON_EN)),
            _log1(len(_NUMBER.findall(ask))),
            _log1(len(_FORMULA.findall(ask))),
            _log1(len(_UNIT.findall(ask))),
            _log1(_count_any(low, _CODE_TOKENS) + len(_CODE_LINE_END.findall(ask))),
            _log1(_count_any(ask, _CONSTRAINT_ZH) + _count_any(low, _CONSTRAINT_EN)),
            _log1(max(conv.turns - 1, 0)),
            _log1(_count_any(ask, _FOLLOW_UP_ZH) + _count_any(low, _FOLLOW_UP_EN)) if conv.turns > 1 else 0.0,
            _log1(domain),
            _log1(conv.images),
            _log1(len(_CHOICES.findall(ask))),
            _log1(_count_any(ask, _LOOKUP_ZH) + _count_any(low, _LOOKUP_EN)),
            _log1(len(conv.context) / 4),
            _log1(len(conv.system) / 4),
            _log1(ask.count("\n")),
            _log1(len(_SENTENCE_END.findall(ask))),
            len(_DIGIT.findall(ask)) / max(len(ask), 1),
        ]
