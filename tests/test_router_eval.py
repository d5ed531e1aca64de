"""The router benchmark's splits: folds that cover every row once, task folds that keep a task
family whole (so "unseen tasks" really are unseen), and the task-label ceiling."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.router_eval import DataSet, fold_indices, load_tasks, task_mean
from router.train import Labelled


def _families() -> np.ndarray:
    return np.array(["law"] * 40 + ["math"] * 25 + ["MMLUPro"] * 20 + ["bio"] * 10 + ["chem"] * 5)


def test_random_folds_cover_every_row_once():
    folds = fold_indices(_families(), by_task=False, seed=3)
    assert len(folds) == 5
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(100))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1


def test_task_folds_keep_each_family_whole_and_cover_every_row():
    families = _families()
    folds = fold_indices(families, by_task=True, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(100))
    owners = {}
    for k, fold in enumerate(folds):
        for family in set(families[fold]):
            assert owners.setdefault(family, k) == k, f"{family} split across folds"
    assert len(owners) == 5  # five families, five folds: one each


def test_load_tasks_reads_subjects_datasets_and_families(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"id": "a", "messages": [{"role": "user", "content": "line\u2028separator inside"}], "weak": 0, "strong": 1,
         "subject": "abstract_algebra"},
        {"id": "b", "messages": [], "weak": 1, "strong": 1, "dataset": "MMLUPro_law"},
        {"id": "c", "messages": [], "weak": 1, "strong": 0, "dataset": "GSM8K"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    tasks, families = load_tasks(path)
    assert tasks.tolist() == ["abstract_algebra", "MMLUPro_law", "GSM8K"]
    assert families.tolist() == ["abstract_algebra", "MMLUPro", "GSM8K"]


def test_task_mean_ceiling_uses_training_gain_per_task():
    def dataset(tasks, weak, strong):
        n = len(tasks)
        data = Labelled([str(i) for i in range(n)], [[]] * n, np.array(weak, float), np.array(strong, float),
                        np.zeros(n, int))
        return DataSet(data, (np.zeros((n, 1)), [""] * n), np.array(tasks), np.array(tasks))

    train = dataset(["law", "law", "math", "math"], [0, 0, 1, 1], [1, 0, 0, 1])
    test = dataset(["math", "law", "poetry"], [0, 0, 0], [0, 0, 0])
    assert task_mean(train, test).tolist() == [-0.5, 0.5, 0.0]  # unseen task: the overall mean
