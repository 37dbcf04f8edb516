"""Gatekeeping: API keys and networks (``keys``), per-key rules (``keysfile``), request, token, daily and
concurrency limits (``limits``, counted in memory or in Redis: ``redisstore``), hooked into Flask by ``gate``.
"""
