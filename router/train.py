"""Train the complexity model on labelled outcomes (JSON lines: id, messages, weak, strong).

The score is prompt length (in estimated tokens) plus a learned correction, shrunk: on labelled
files it never saw, a freely learned model did no better than length. The correction's label is
whether the strong model did better (`strong - weak > 0`); rows where it did worse weigh double,
since sending those to the cloud costs money and quality. Each input file is weighted to the same
total, so a 14k-row file does not drown a 700-row one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from router.features import FEATURE_NAMES, UNWEIGHTED, FeatureExtractor
from router.model import NGRAM_CHARS, Z_CLIP, ComplexityModel, ngram_text
from textkit.conversation import read_conversation
from textkit.jsonl import read_jsonl

MIN_SUPPORT = 0.01  # a feature must be non-zero in at least 1% of rows to be learned
QUANTILE_KNOTS = 201


@dataclass
class Labelled:
    ids: list[str]
    messages: list[Any]
    weak: np.ndarray
    strong: np.ndarray
    group: np.ndarray  # index of the source file


def load_labelled(paths: Iterable[str | Path]) -> Labelled:
    """Rows from JSON-lines files; shadow rows stored as hashes only (`messages: null`) cannot train
    and are skipped."""
    ids, messages, weak, strong, group = [], [], [], [], []
    hashed_only = 0
    for gi, path in enumerate(paths):
        def bad(number: int, reason: str, path: str | Path = path) -> NoReturn:
            raise ValueError(f"{path}:{number}: need JSON with messages, weak, strong ({reason})")

        with open(path, encoding="utf-8") as fh:
            for n, row in read_jsonl(fh, bad):
                try:
                    w, s = float(row["weak"]), float(row["strong"])
                except (KeyError, TypeError, ValueError) as exc:
                    bad(n, f"{type(exc).__name__}: {exc}")
                if row.get("messages") is None and "messages_sha256" in row:
                    hashed_only += 1
                    continue
                ids.append(str(row.get("id", f"{Path(path).stem}-{n}")))
                messages.append(row.get("messages", []))
                weak.append(w)
                strong.append(s)
                group.append(gi)
    if not ids:
        why = f" ({hashed_only} rows hold only a hash of their messages: router.shadow.store_messages was off)" \
            if hashed_only else ""
        raise ValueError("no labelled rows found" + why)
    return Labelled(ids, messages, np.array(weak), np.array(strong), np.array(group))


def featurize(messages: list[Any], features: FeatureExtractor | None = None) -> tuple[np.ndarray, list[str]]:
    """Feature rows and n-gram texts. Training uses the plain segmenter (no domain terms): a
    deployment's terms are added at scoring time only, through its own extractor."""
    features = features if features is not None else FeatureExtractor()
    convs = [read_conversation(m) for m in messages]
    return np.array([features.extract(c) for c in convs], dtype=float), [ngram_text(c.ask) for c in convs]


# Two recipes. TRANSFER, for the bundled model that must serve traffic unlike its training files,
# was chosen by leaving one whole labelled file out at a time (benchmarks/router_eval.py): a length
# prior plus a learned correction shrunk to a tenth of the prior's spread; on files it never saw,
# wording (n-grams) and unshrunk weights did worse than length alone. The defaults (correction None:
# the learned model alone, with n-grams) are for a deployment's own labelled traffic, where what
# was learned is what will be seen.
DEFAULT_C = 1.0
DEFAULT_MAX_NGRAMS = 20000
TRANSFER: dict[str, Any] = {"c": 1.0, "max_ngrams": 0, "correction": 0.1}
LENGTH_FEATURE = "log_tokens"


def train(data: Labelled, c: float = DEFAULT_C, max_ngrams: int = DEFAULT_MAX_NGRAMS,
          ngram_range: tuple[int, int] = (1, 3), features: tuple[np.ndarray, list[str]] | None = None,
          correction: float | None = None) -> ComplexityModel:
    """The learned model alone (correction None), or z(length) + correction * (learned decision /
    its spread on the training rows).

    The learned part is a logistic regression (label: the strong model did better) over the
    named features and, when max_ngrams > 0, character n-grams. Dividing by its spread makes
    `correction` a share of the length prior whatever C is: 0 is prompt length alone, 1 weighs
    the learned part as much as length."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    if correction is not None and correction < 0:
        raise ValueError("the correction weight must be >= 0")
    x_feat, texts = features if features is not None else featurize(data.messages)
    mean = x_feat.mean(axis=0)
    scale = x_feat.std(axis=0)
    # A feature the data barely exercise (Chinese text in English data, images, multi-turn) would
    # get a weight that only reflects the data set: leave it to its prior instead (scale 0).
    supported = (np.count_nonzero(x_feat, axis=0) >= MIN_SUPPORT * len(x_feat)) & (scale > 1e-6)
    supported &= np.array([name not in UNWEIGHTED for name in FEATURE_NAMES])
    scale = np.where(supported, scale, 0.0)
    z = np.where(scale > 0, (x_feat - mean) / np.where(scale > 0, scale, 1.0), 0.0).clip(-Z_CLIP, Z_CLIP)
    gain = data.strong - data.weak
    y = (gain > 0).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("the labels need both outcomes: some rows where strong beats weak, some where not")
    weights = np.where(gain < 0, 2.0, 1.0)
    groups = np.unique(data.group)
    for g in groups:  # every file carries the same total weight, N / number of files
        in_group = data.group == g
        weights[in_group] *= (len(y) / len(groups)) / weights[in_group].sum()
    x = csr_matrix(z)
    vectorizer = None
    if max_ngrams > 0:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Already lower-cased, capped and whitespace-collapsed by ngram_text: sklearn must not redo it.
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=ngram_range, min_df=3, max_features=max_ngrams,
                                     sublinear_tf=True, lowercase=False, dtype=np.float64)
        x = hstack([x, vectorizer.fit_transform(texts)]).tocsr()
    reg = LogisticRegression(C=c, max_iter=3000)
    reg.fit(x, y, sample_weight=weights)
    n_feat = len(FEATURE_NAMES)
    coef, intercept = reg.coef_[0], float(reg.intercept_[0])
    feature_coef = coef[:n_feat].copy()
    if correction is not None:
        shrink = correction / (float(reg.decision_function(x).std()) or 1.0)
        coef, intercept = coef * shrink, 0.0
        feature_coef = coef[:n_feat].copy()
        feature_coef[FEATURE_NAMES.index(LENGTH_FEATURE)] += 1.0  # the prior: one unit per SD of log length
    decisions = intercept + x @ np.concatenate([feature_coef, coef[n_feat:]])
    vocab = {} if vectorizer is None else {
        gram: (float(vectorizer.idf_[i]), float(coef[n_feat + i])) for gram, i in vectorizer.vocabulary_.items()}
    return ComplexityModel(
        feature_names=FEATURE_NAMES, mean=mean.tolist(), scale=scale.tolist(), coef=feature_coef.tolist(),
        ngram_range=ngram_range, vocab=vocab, intercept=intercept,
        quantiles=np.quantile(decisions, np.linspace(0, 1, QUANTILE_KNOTS)).tolist(),
        meta={"rows": len(y), "positive_share": float(y.mean()), "C": c, "max_ngrams": max_ngrams,
              "correction": correction, "length_prior": LENGTH_FEATURE if correction is not None else None,
              "ngram_chars": NGRAM_CHARS},
    )
