"""Hybrid retrieval (jieba + BM25, dense, fusion, rerank). Built in its own issue."""
