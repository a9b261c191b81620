"""Test utilities shipped with the package (standard library only, never imported by rlaif itself).

``rlaif.testing.fake_openai``: a local OpenAI-compatible server with scripted
replies and HTTP-level faults, used by the LLM-judge tests and
``bench/judge_throughput.py``; run it with ``python -m rlaif.testing.fake_openai``.
"""
