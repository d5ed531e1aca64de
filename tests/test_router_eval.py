"""The router benchmark's leave-one-file-out protocol: a left-out file never trains the model that
judges it, nor chooses the recipe that does; the win count compares against both baselines."""

from __future__ import annotations

import numpy as np

from benchmarks.router_eval import LENGTH, LITELLM, QROUTE, DataSet, Lofo, Recipe, wins
from router.train import Labelled, featurize
from textkit.conversation import read_conversation


def _file(seed: int, n: int = 60) -> DataSet:
    """Short asks with numbers and reasoning words are the ones the strong model wins (with noise),
    in every file; the easy asks are longer, so length alone ranks them the wrong way round."""
    rng = np.random.default_rng(seed)
    messages, weak, strong = [], [], []
    for i in range(n):
        hard = rng.random() < 0.5
        text = (f"Prove {i} * {i + 3} = {i * (i + 3)}; calculate why." if hard
                else f"Who wrote the book called number {i} in the library catalogue, please tell me the name?")
        messages.append([{"role": "user", "content": text}])
        weak.append(float(not hard or rng.random() < 0.3))
        strong.append(1.0)
    data = Labelled([f"{seed}-{i}" for i in range(n)], messages, np.array(weak), np.array(strong), np.zeros(n, int))
    x, texts = featurize(messages)
    return DataSet(data, x, texts, [read_conversation(m).ask for m in messages])


class _Recording(Lofo):
    def __init__(self, sets: dict[str, DataSet]) -> None:
        super().__init__(sets)
        self.seen: list[tuple[str, frozenset[str]]] = []  # (test file, files trained on)

    def scores(self, recipe: Recipe, test: str, also_out: frozenset[str] = frozenset()) -> np.ndarray:
        self.seen.append((test, frozenset(self.sets) - {test} - also_out))
        return super().scores(recipe, test, also_out)


def test_nested_choice_never_reads_the_left_out_file():
    lofo = _Recording({name: _file(seed) for seed, name in enumerate("abcd")})
    grid = [Recipe(1.0, 0.0), Recipe(1.0, 0.5)]
    lofo.choose(grid, without="c")
    assert lofo.seen, "the choice evaluated nothing"
    for test, trained_on in lofo.seen:
        assert test != "c" and "c" not in trained_on
        assert test not in trained_on and len(trained_on) == 2  # four files, one out, one tested


def test_plain_lofo_trains_on_every_other_file():
    lofo = _Recording({name: _file(seed) for seed, name in enumerate("abc")})
    lofo.apgr(Recipe(1.0, 0.5), "b")
    assert lofo.seen == [("b", frozenset({"a", "c"}))]


def test_a_learned_correction_is_chosen_when_it_helps_on_every_file():
    # Length ranks these files backwards; numbers and reasoning words rank them right: the
    # correction must win the choice.
    lofo = Lofo({name: _file(seed) for seed, name in enumerate("abcd")})
    assert lofo.choose([Recipe(1.0, 0.0), Recipe(1.0, 1.0)]).correction == 1.0


def test_wins_need_both_baselines_beaten():
    def file(q: float, length: float, litellm: float) -> dict:
        return {"routers": [{"router": QROUTE, "APGR": q}, {"router": LENGTH, "APGR": length},
                            {"router": LITELLM, "APGR": litellm}]}

    per_file = [file(0.6, 0.5, 0.5), file(0.6, 0.7, 0.5), file(0.6, 0.5, 0.6), file(0.61, 0.6, 0.6)]
    assert wins(per_file, QROUTE) == 2
